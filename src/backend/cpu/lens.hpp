// The internal-policy lens on one chunk of rows (the CPU reference of Backend::lens_*): logits
// z (rows, V_local) = x·Eᵀ are formed in a workspace, reduced and discarded; the backward
// recomputes them. Per row: m = max z, packed = [S = Σe^{z−m}, T = Σe^{z−m}(z−m), z_t − m]
// (S and T summed in fp64 over 16 column lanes, then the lanes in order; exp is vec_exp.hpp's;
// z_t − m is 0 when the target is outside the shard
// [v0, v0 + V_local)). Entropy H = log S − T/S, log-prob z_t − m − log S.
#pragma once
#include <cstdint>

namespace bupo::cpu {

inline int64_t lens_work(int64_t rows, int64_t V_local) {
  return rows * V_local;
}

// m (rows), packed (rows, 3); x (rows, d), E (V_local, d); targets (rows) global ids or null.
// z_work (rows·V_local) may be null.
void lens_stats(float* m, float* packed, const float* x, int64_t rows, const float* E,
                int64_t V_local, int64_t d, const int32_t* targets, int64_t v0,
                float* z_work = nullptr);
// packed of one shard relative to its own max, rescaled to the global max.
void lens_rescale(float* packed, const float* m_local, const float* m_global,
                  const int32_t* targets, int64_t v0, int64_t V_local, int64_t rows);
// entropy / logprob (rows) may each be null.
void lens_outputs(float* entropy, float* logprob, const float* packed, int64_t rows);
// dz = g_lp (δ_t − p) − g_ent · p (log p + H); dE (V_local, d) += dzᵀ x; dx (rows, d) = dz E.
void lens_backward(float* dx, float* dE, const float* x, int64_t rows, const float* E,
                   int64_t V_local, int64_t d, const float* m, const float* packed,
                   const int32_t* targets, int64_t v0, const float* g_logprob,
                   const float* g_entropy, float* z_work = nullptr);
// ebar (rows, d) = p E with p = e^{z−m}/S (m, packed global): the expected row of E under the lens.
void lens_expectation(float* ebar, const float* x, int64_t rows, const float* E, int64_t V_local,
                      int64_t d, const float* m, const float* packed, float* z_work = nullptr);

}  // namespace bupo::cpu
