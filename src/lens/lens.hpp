// The internal-policy lens (papers.md §1.2–1.3): for hidden rows h, the policy softmax(h·E_uᵀ)
// ("raw", the paper's: no final norm) or softmax(LN_final(h)·E_uᵀ) ("normed", the logit lens and,
// at H^L, the model's own output policy). Per row it gives the entropy (nats) and the log-prob of
// a target token, and the backward of  Σ_r g_lp[r]·logp[r] + g_ent[r]·H[r]  into h, E_u and the
// norm gain.
//
// Rows are processed in chunks: logits (chunk, V_local) are formed, reduced and discarded, and
// recomputed in the backward — full-vocabulary logits for all rows never exist. Under tensor
// parallelism E_u is vocab-sharded and each chunk needs exactly one all-reduce of the row maxima
// and one packed all-reduce of [Σe^{z−m}, Σe^{z−m}(z−m), z_target−m] (Megatron's vocab-parallel
// cross entropy, extended with the entropy).
#pragma once
#include <cstdint>
#include <string>

#include "model/params.hpp"
#include "parallel/comm.hpp"

namespace bupo {

enum class LensMode { Raw, Normed };
LensMode lens_mode_from_string(const std::string& s);  // "raw" | "normed"
const char* lens_mode_name(LensMode m);

struct Lens {
  Param* unembed = nullptr;  // E_u (V_local, d), rows [shard_offset, shard_offset + V_local)
  Param* norm = nullptr;     // final RMSNorm gain, used when mode == Normed
  LensMode mode = LensMode::Raw;
  float eps = 1e-6f;
  Comm* tp = nullptr;      // vocab-parallel group (size 1 on one process)
  int64_t chunk_rows = 0;  // rows per chunk; 0 = choose from the vocabulary size

  int64_t chunk_for(int64_t n) const;
  // x (n, d). targets (n) global token ids, or null. entropy / logprob (n) may each be null.
  void forward(const float* x, int64_t n, const int32_t* targets, float* entropy,
               float* logprob) const;
  // Accumulates dx (n, d) (+=), E_u.g and norm.g; g_logprob / g_entropy (n) may each be null.
  void backward(const float* x, int64_t n, const int32_t* targets, const float* g_logprob,
                const float* g_entropy, float* dx) const;
  // Full logits (n, V_local) of the local shard: for tests and small analyses only.
  void logits(const float* x, int64_t n, float* out) const;
};

}  // namespace bupo
