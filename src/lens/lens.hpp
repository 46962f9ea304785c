// The internal-policy lens (papers.md §1.2–1.3): for hidden rows h, the policy softmax(h·E_uᵀ)
// ("raw", the paper's: no final norm) or softmax(LN_final(h)·E_uᵀ) ("normed", the logit lens and,
// at H^L, the model's own output policy). Per row it gives the entropy (nats) and the log-prob of
// a target token, and the backward of  Σ_r g_lp[r]·logp[r] + g_ent[r]·H[r]  into h, E_u and the
// norm gain.
//
// Rows are processed in chunks by the backend's lens ops: logits (chunk, V_local) are reduced and
// discarded, and recomputed in the backward — full-vocabulary logits for all rows never exist.
// Under tensor parallelism E_u is vocab-sharded and each chunk needs exactly one all-reduce of the
// row maxima and one packed all-reduce of [Σe^{z−m}, Σe^{z−m}(z−m), z_target−m] (Megatron's
// vocab-parallel cross entropy, extended with the entropy): each shard reduces against its own
// maximum, then rescales to the global one before the sum.
//
// The hidden rows and their gradient are tensors in the parameters' backend memory; targets,
// outputs and the per-row loss gradients are host arrays (n values: what the trainer's loss and
// the diagnostics work with).
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
  // kl (n) = KL(π_x ‖ π_ref) per row of Lens::forward's x, where π_ref = softmax(ref·E_uᵀ) for
  // rows ref (n, d) taken as the lens input itself (no norm), with log-partition lse_ref (n)
  // (Lens::forward of a raw lens on ref). Computed as
  //   KL = Σ_v p_v (z_v − z'_v) − lse_x + lse_ref = −H(π_x) + lse_ref − ref·Ē,  Ē = Σ_v p_v E_v
  // (Backend::lens_expectation: two GEMMs per chunk, one all-reduce of Ē (rows, d) under TP), so
  // no logits of either policy are kept. Ē in the compute dtype bounds the error: about
  // |ref·Ē|·2⁻⁸ in bf16, fp32 rounding on the CPU.
  struct KlToReference {
    Tensor ref;
    const float* lse_ref = nullptr;
    float* kl = nullptr;
  };

  Param* unembed = nullptr;  // E_u (V_local, d), rows [shard_offset, shard_offset + V_local)
  Param* norm = nullptr;     // final RMSNorm gain, used when mode == Normed
  LensMode mode = LensMode::Raw;
  float eps = 1e-6f;
  Comm* tp = nullptr;      // vocab-parallel group for device memory (size 1 on one process)
  int64_t chunk_rows = 0;  // rows per chunk; 0 = choose from the vocabulary size

  int64_t chunk_for(int64_t n) const;
  // x (n, d). targets (n) global token ids, or null. entropy / logprob / lse (n) may each be
  // null; lse is the log-partition log Σ_v e^{z_v} of the whole vocabulary. With kl, also
  // KL(π_x ‖ π_ref) per row (KlToReference).
  struct KlToReference;
  void forward(const Tensor& x, const int32_t* targets, float* entropy, float* logprob,
               float* lse = nullptr, const KlToReference* kl = nullptr) const;
  // Accumulates dx (n, d) (+=), E_u.g and norm.g; g_logprob / g_entropy (n) may each be null.
  void backward(const Tensor& x, const int32_t* targets, const float* g_logprob,
                const float* g_entropy, const Tensor& dx) const;
  // Full logits out (n, V_local) of the local shard, F32 (or the compute dtype): for sampling,
  // tests and small analyses.
  void logits(const Tensor& x, const Tensor& out) const;
  // Scratch bytes a forward (with KL) or backward over n rows needs (besides the op workspace).
  size_t scratch_bytes(int64_t n) const;
  Backend& backend() const { return *unembed->backend; }
};

}  // namespace bupo
