// Causal scaled-dot-product attention with grouped KV heads over packed variable-length
// sequences (cu_seqlens, as flash-attn's varlen API). Query head h reads KV head h / (H / Hkv).
// Probabilities are not stored: the forward saves the row log-sum-exp and the backward
// recomputes P from it (flash-attention style), so memory is O(N·H), not O(T²·H) per layer.
// Each call needs a workspace of the floats below for the longest sequence (T) and key range;
// `work` null: the kernel allocates it (tests), the CPU backend passes its scratch arena.
#pragma once
#include <cstdint>
#include <span>

namespace bupo::cpu {

struct AttnShape {
  int64_t N = 0;    // packed rows
  int64_t H = 0;    // query heads (local to this rank)
  int64_t Hkv = 0;  // KV heads (local to this rank)
  int64_t D = 0;    // head dim
};

// Queries per block of the causal kernels: a block of rows [i0, i0 + B) computes its scores
// against keys [0, i0 + B) only, which skips the fully masked tiles above the diagonal (about half
// the work of full T × T products at T >> B). 512: the row count from which the packed GEMM takes
// over (docs/benchmarks.md); smaller blocks fall to OpenBLAS tiles and were measured slower (B =
// 64: 13.8 against 8.5 ms at T = 512; B = 256: 103 against 82 ms at T = 2048). At T <= 512 one
// block is the whole sequence, as before.
inline constexpr int64_t kAttnQueryBlock = 512;

inline int64_t attention_forward_work(int64_t T) {
  return T * T;
}  // scores of one head (a query block's fit in them)
inline int64_t attention_backward_work(int64_t T) {
  return 2 * T * T;
}  // P and dP
inline int64_t attention_cached_work(int64_t T, int64_t keys) {
  return T * keys;
}

// q (N, H, D); k, v (N, Hkv, D); o (N, H, D); lse (N, H).
// cu_seqlens (S+1): sequence s occupies rows [cu[s], cu[s+1]).
void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v,
                       std::span<const int64_t> cu_seqlens, const AttnShape& s,
                       float* work = nullptr);

// dq (N, H, D) overwritten; dk, dv (N, Hkv, D) overwritten.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* o, const float* lse,
                        std::span<const int64_t> cu_seqlens, const AttnShape& s,
                        float* work = nullptr);

// Attention of new query rows over a KV cache (inference: prefill and decode share this path).
// Sequence s owns query rows [cu[s], cu[s+1]) at positions pos[r] (contiguous, increasing) and
// cache slot slots[s]; its keys/values for positions 0..pos[r] are already in
// kc/vc + slots[s]·slot_stride, rows of width Hkv·D. o (N, H·D).
void attention_cached_forward(float* o, const float* q, const float* kc, const float* vc,
                              int64_t slot_stride, std::span<const int64_t> cu_seqlens,
                              const int32_t* pos, std::span<const int64_t> slots,
                              const AttnShape& s, float* work = nullptr);
// The longest key range a cached call reads: max over sequences of pos[last row] + 1.
int64_t attention_cached_keys(std::span<const int64_t> cu_seqlens, const int32_t* pos);

}  // namespace bupo::cpu
