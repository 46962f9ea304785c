// Causal GQA attention over packed variable-length sequences: the hand-written kernels that cover
// every shape (cudnn_attention.cpp offers cuDNN's fused SDPA where it accepts the shape). One warp
// per (query row, head); lanes split the head dimension; keys are visited in order with an online
// softmax (backend/device_math.hpp), fp32 throughout. The backward recomputes the probabilities
// from the saved log-sum-exp (flash-attention style) and gives every output one owner: a warp per
// query row for dq, a warp per key row and KV head for dk/dv (looping over the group's query heads
// and the later rows of its sequence) — deterministic, no atomics.
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/plans.hpp"

namespace bupo::cuda {
namespace {

constexpr int kMaxPerLane = kMaxHeadDim / 32;

template <typename T>
__device__ __forceinline__ void load_row(float (&r)[kMaxPerLane], const T* p, int64_t D, int lane,
                                         int per_lane) {
  for (int e = 0; e < per_lane; ++e) {
    const int64_t c = lane + 32 * e;
    r[e] = c < D ? to_f<T>(p[c]) : 0.0f;
  }
}
template <typename T>
__device__ __forceinline__ float dot_row(const float (&q)[kMaxPerLane], const T* k, int64_t D,
                                         int lane, int per_lane) {
  float s = 0;
  for (int e = 0; e < per_lane; ++e) {
    const int64_t c = lane + 32 * e;
    if (c < D) s += q[e] * to_f<T>(k[c]);
  }
  return warp_sum(s);
}

// Keys of query row n: rows [k0, k0 + nk) of (k, v) with row stride ldk (elements).
struct KeyRange {
  int64_t k0, nk;
};

// o row = Σ_j softmax(q·k_j·scale) v_j over the key range; lse (optional) = its log-sum-exp
template <typename T>
__device__ void attend_row(T* o, float* lse, const T* q, const T* k, const T* v, int64_t ldk,
                           KeyRange keys, int64_t D, float scale, int lane, int per_lane) {
  float qr[kMaxPerLane], acc[kMaxPerLane];
  load_row(qr, q, D, lane, per_lane);
  for (int e = 0; e < per_lane; ++e) {
    qr[e] *= scale;
    acc[e] = 0;
  }
  dmath::OnlineRow row;
  for (int64_t j = 0; j < keys.nk; ++j) {
    const int64_t kr = (keys.k0 + j) * ldk;
    const float s = dot_row(qr, k + kr, D, lane, per_lane);
    float p, rescale;
    dmath::online_push(row, s, p, rescale);
    for (int e = 0; e < per_lane; ++e) {
      const int64_t c = lane + 32 * e;
      acc[e] = acc[e] * rescale + (c < D ? p * to_f<T>(v[kr + c]) : 0.0f);
    }
  }
  const float inv = row.l > 0 ? 1.0f / row.l : 0.0f;
  for (int e = 0; e < per_lane; ++e) {
    const int64_t c = lane + 32 * e;
    if (c < D) o[c] = from_f<T>(acc[e] * inv);
  }
  if (lse != nullptr && lane == 0) *lse = dmath::online_lse(row);
}

template <typename T>
__global__ void attention_fwd_kernel(T* __restrict__ o, float* __restrict__ lse,
                                     const T* __restrict__ q, const T* __restrict__ k,
                                     const T* __restrict__ v, const int32_t* __restrict__ cu,
                                     int64_t S, int64_t N, int64_t H, int64_t Hkv, int64_t D,
                                     float scale, int per_lane) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * AttnLaunch::kWarps + (threadIdx.x >> 5);
  const int64_t h = blockIdx.y;
  if (n >= N) return;
  const int lane = threadIdx.x & 31;
  const int64_t seq = dmath::sequence_of(cu, S, n), t0 = cu[seq];
  const int64_t hk = h / (H / Hkv), ldq = H * D, ldk = Hkv * D;
  attend_row(o + n * ldq + h * D, lse + n * H + h, q + n * ldq + h * D, k + hk * D, v + hk * D, ldk,
             KeyRange{t0, n - t0 + 1}, D, scale, lane, per_lane);
}

// query row n of sequence s (slot slots[s]) over cached positions 0..pos[n]
template <typename T>
__global__ void attention_decode_kernel(T* __restrict__ o, const T* __restrict__ q,
                                        const T* __restrict__ kc, const T* __restrict__ vc,
                                        const int32_t* __restrict__ cu,
                                        const int32_t* __restrict__ pos,
                                        const int32_t* __restrict__ slots, int64_t S, int64_t N,
                                        int64_t H, int64_t Hkv, int64_t D, int64_t max_len,
                                        float scale, int per_lane) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * AttnLaunch::kWarps + (threadIdx.x >> 5);
  const int64_t h = blockIdx.y;
  if (n >= N) return;
  const int lane = threadIdx.x & 31;
  const int64_t seq = dmath::sequence_of(cu, S, n);
  const int64_t hk = h / (H / Hkv), ldq = H * D, ldk = Hkv * D;
  const int64_t base = static_cast<int64_t>(slots[seq]) * max_len;
  attend_row<T>(o + n * ldq + h * D, nullptr, q + n * ldq + h * D, kc + hk * D, vc + hk * D, ldk,
                KeyRange{base, static_cast<int64_t>(pos[n]) + 1}, D, scale, lane, per_lane);
}

// dq row n, head h: Σ_j dS_ij k_j·scale with dS = P (dP − D_i), P = exp(s − lse), dP = dO·v
template <typename T>
__global__ void attention_bwd_dq_kernel(T* __restrict__ dq, const T* __restrict__ dout,
                                        const T* __restrict__ q, const T* __restrict__ k,
                                        const T* __restrict__ v, const T* __restrict__ o,
                                        const float* __restrict__ lse,
                                        const int32_t* __restrict__ cu, int64_t S, int64_t N,
                                        int64_t H, int64_t Hkv, int64_t D, float scale,
                                        int per_lane) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * AttnLaunch::kWarps + (threadIdx.x >> 5);
  const int64_t h = blockIdx.y;
  if (n >= N) return;
  const int lane = threadIdx.x & 31;
  const int64_t seq = dmath::sequence_of(cu, S, n), t0 = cu[seq];
  const int64_t hk = h / (H / Hkv), ldq = H * D, ldk = Hkv * D;
  float qr[kMaxPerLane], gr[kMaxPerLane], acc[kMaxPerLane], orow[kMaxPerLane];
  load_row(qr, q + n * ldq + h * D, D, lane, per_lane);
  load_row(gr, dout + n * ldq + h * D, D, lane, per_lane);
  load_row(orow, o + n * ldq + h * D, D, lane, per_lane);
  float di = 0;  // D_i = Σ_c dO·O
  for (int e = 0; e < per_lane; ++e) {
    di += gr[e] * orow[e];
    qr[e] *= scale;
    acc[e] = 0;
  }
  di = warp_sum(di);
  const float l = lse[n * H + h];
  for (int64_t j = t0; j <= n; ++j) {
    const T* kj = k + j * ldk + hk * D;
    const float p = expf(dot_row(qr, kj, D, lane, per_lane) - l);
    const float dp = dot_row(gr, v + j * ldk + hk * D, D, lane, per_lane);
    const float ds = p * (dp - di);
    for (int e = 0; e < per_lane; ++e) {
      const int64_t c = lane + 32 * e;
      if (c < D) acc[e] += ds * to_f<T>(kj[c]);
    }
  }
  for (int e = 0; e < per_lane; ++e) {
    const int64_t c = lane + 32 * e;
    if (c < D) dq[n * ldq + h * D + c] = from_f<T>(acc[e] * scale);
  }
}

// dk, dv of key row j, KV head hk: over the group's query heads and rows i >= j of the sequence
template <typename T>
__global__ void attention_bwd_dkdv_kernel(T* __restrict__ dk, T* __restrict__ dv,
                                          const T* __restrict__ dout, const T* __restrict__ q,
                                          const T* __restrict__ k, const T* __restrict__ v,
                                          const T* __restrict__ o, const float* __restrict__ lse,
                                          const int32_t* __restrict__ cu, int64_t S, int64_t N,
                                          int64_t H, int64_t Hkv, int64_t D, float scale,
                                          int per_lane) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * AttnLaunch::kWarps + (threadIdx.x >> 5);
  const int64_t hk = blockIdx.y;
  if (j >= N) return;
  const int lane = threadIdx.x & 31;
  const int64_t seq = dmath::sequence_of(cu, S, j), t1 = cu[seq + 1];
  const int64_t group = H / Hkv, ldq = H * D, ldk = Hkv * D;
  float kr[kMaxPerLane], vr[kMaxPerLane], dka[kMaxPerLane], dva[kMaxPerLane];
  load_row(kr, k + j * ldk + hk * D, D, lane, per_lane);
  load_row(vr, v + j * ldk + hk * D, D, lane, per_lane);
  for (int e = 0; e < per_lane; ++e) dka[e] = dva[e] = 0;
  for (int64_t h = hk * group; h < (hk + 1) * group; ++h)
    for (int64_t i = j; i < t1; ++i) {
      const T* qi = q + i * ldq + h * D;
      const T* gi = dout + i * ldq + h * D;
      float qs[kMaxPerLane], gs[kMaxPerLane], os[kMaxPerLane];
      load_row(qs, qi, D, lane, per_lane);
      load_row(gs, gi, D, lane, per_lane);
      load_row(os, o + i * ldq + h * D, D, lane, per_lane);
      float s = 0, dp = 0, di = 0;
      for (int e = 0; e < per_lane; ++e) {
        s += qs[e] * kr[e];
        dp += gs[e] * vr[e];
        di += gs[e] * os[e];
      }
      s = warp_sum(s) * scale;
      dp = warp_sum(dp);
      di = warp_sum(di);
      const float p = expf(s - lse[i * H + h]);
      const float ds = p * (dp - di);
      for (int e = 0; e < per_lane; ++e) {
        dva[e] += p * gs[e];
        dka[e] += ds * qs[e];
      }
    }
  for (int e = 0; e < per_lane; ++e) {
    const int64_t c = lane + 32 * e;
    if (c >= D) continue;
    dk[j * ldk + hk * D + c] = from_f<T>(dka[e] * scale);
    dv[j * ldk + hk * D + c] = from_f<T>(dva[e]);
  }
}

}  // namespace

void launch_attention_forward(const Tensor& o, const Tensor& lse, const Tensor& q, const Tensor& k,
                              const Tensor& v, const SeqIndex& seqs, const AttnShape& a,
                              cudaStream_t s) {
  if (a.N == 0) return;
  const AttnLaunch l = attention_launch(a.N, a.H, a.D);
  const float scale = 1.0f / sqrtf(static_cast<float>(a.D));
  dispatch_float(q.dtype, [&](auto t) {
    using T = decltype(t);
    attention_fwd_kernel<T><<<dim3(l.grid_x, l.grid_y), l.threads, 0, s>>>(
        static_cast<T*>(o.data), lse.f32(), static_cast<const T*>(q.data),
        static_cast<const T*>(k.data), static_cast<const T*>(v.data), seqs.cu_dev.i32(), seqs.S,
        a.N, a.H, a.Hkv, a.D, scale, l.per_lane);
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                               const Tensor& dout, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& o, const Tensor& lse,
                               const SeqIndex& seqs, const AttnShape& a, cudaStream_t s) {
  if (a.N == 0) return;
  const AttnLaunch lq = attention_launch(a.N, a.H, a.D), lk = attention_launch(a.N, a.Hkv, a.D);
  const float scale = 1.0f / sqrtf(static_cast<float>(a.D));
  dispatch_float(q.dtype, [&](auto t) {
    using T = decltype(t);
    attention_bwd_dq_kernel<T><<<dim3(lq.grid_x, lq.grid_y), lq.threads, 0, s>>>(
        static_cast<T*>(dq.data), static_cast<const T*>(dout.data), static_cast<const T*>(q.data),
        static_cast<const T*>(k.data), static_cast<const T*>(v.data), static_cast<const T*>(o.data),
        lse.f32(), seqs.cu_dev.i32(), seqs.S, a.N, a.H, a.Hkv, a.D, scale, lq.per_lane);
    attention_bwd_dkdv_kernel<T><<<dim3(lk.grid_x, lk.grid_y), lk.threads, 0, s>>>(
        static_cast<T*>(dk.data), static_cast<T*>(dv.data), static_cast<const T*>(dout.data),
        static_cast<const T*>(q.data), static_cast<const T*>(k.data), static_cast<const T*>(v.data),
        static_cast<const T*>(o.data), lse.f32(), seqs.cu_dev.i32(), seqs.S, a.N, a.H, a.Hkv, a.D,
        scale, lk.per_lane);
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_attention_decode(const Tensor& o, const Tensor& q, const Tensor& kc, const Tensor& vc,
                             int64_t max_len, const SeqIndex& seqs, const AttnShape& a,
                             cudaStream_t s) {
  if (a.N == 0) return;
  const AttnLaunch l = attention_launch(a.N, a.H, a.D);
  const float scale = 1.0f / sqrtf(static_cast<float>(a.D));
  dispatch_float(q.dtype, [&](auto t) {
    using T = decltype(t);
    attention_decode_kernel<T><<<dim3(l.grid_x, l.grid_y), l.threads, 0, s>>>(
        static_cast<T*>(o.data), static_cast<const T*>(q.data), static_cast<const T*>(kc.data),
        static_cast<const T*>(vc.data), seqs.cu_dev.i32(), seqs.pos_dev.i32(), seqs.slots_dev.i32(),
        seqs.S, a.N, a.H, a.Hkv, a.D, max_len, scale, l.per_lane);
  });
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace bupo::cuda
