// The lens on the GPU, per vocabulary tile: logits of a chunk of rows against one tile of E_u come
// from a cuBLASLt GEMM into F32 scratch (cuda_backend.cpp drives the tiles); these kernels reduce a
// tile into each row's running statistics (max, Σe^{z−m}, Σe^{z−m}(z−m), the target logit) with
// the exact merge of backend/device_math.hpp, finish them into the `packed` layout of the CPU
// backend, combine vocabulary shards, and form dL/dz of a tile for the backward. Full-vocabulary
// logits never exist.
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"

namespace bupo::cuda {
namespace {

// one block per row: this tile's statistics merged into (m, S, T); zt = the target's logit
__global__ void lens_tile_reduce_kernel(float* __restrict__ m, float* __restrict__ S,
                                        float* __restrict__ T, float* __restrict__ zt,
                                        const float* __restrict__ z, int64_t tile, int64_t col0,
                                        const int32_t* __restrict__ targets, int64_t v0,
                                        bool first) {
  const int64_t r = blockIdx.x;
  const float* zr = z + r * tile;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < tile; j += blockDim.x) mx = fmaxf(mx, zr[j]);
  mx = block_max(mx);
  float s = 0, t = 0;
  for (int64_t j = threadIdx.x; j < tile; j += blockDim.x) {
    const float w = zr[j] - mx, e = expf(w);
    s += e;
    t += e * w;
  }
  s = block_sum(s);
  t = block_sum(t);
  if (threadIdx.x != 0) return;
  dmath::SoftmaxStats acc = first ? dmath::SoftmaxStats{} : dmath::SoftmaxStats{m[r], S[r], T[r]};
  acc = dmath::stats_merge(acc, dmath::SoftmaxStats{mx, s, t});
  m[r] = acc.m;
  S[r] = acc.S;
  T[r] = acc.T;
  if (first) zt[r] = NAN;
  if (targets != nullptr) {
    const int64_t c = static_cast<int64_t>(targets[r]) - v0 - col0;
    if (c >= 0 && c < tile) zt[r] = zr[c];
  }
}

// packed (rows, 3) = [S, T, z_t − m] (0 when the target is outside this shard)
__global__ void lens_finish_kernel(float* __restrict__ mout, float* __restrict__ packed,
                                   const float* __restrict__ m, const float* __restrict__ S,
                                   const float* __restrict__ T, const float* __restrict__ zt,
                                   int64_t rows) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  mout[r] = m[r];
  packed[3 * r] = S[r];
  packed[3 * r + 1] = T[r];
  packed[3 * r + 2] = isnan(zt[r]) ? 0.0f : zt[r] - m[r];
}

__global__ void lens_rescale_kernel(float* __restrict__ packed, const float* __restrict__ ml,
                                    const float* __restrict__ mg,
                                    const int32_t* __restrict__ targets, int64_t v0, int64_t Vl,
                                    int64_t rows) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float S = packed[3 * r], T = packed[3 * r + 1];
  dmath::stats_shift(S, T, ml[r], mg[r]);
  packed[3 * r] = S;
  packed[3 * r + 1] = T;
  if (targets != nullptr) {
    const int64_t t = static_cast<int64_t>(targets[r]) - v0;
    if (t >= 0 && t < Vl) packed[3 * r + 2] += ml[r] - mg[r];
  }
}

__global__ void lens_outputs_kernel(float* __restrict__ entropy, float* __restrict__ logprob,
                                    const float* __restrict__ packed, int64_t rows) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const float S = packed[3 * r], T = packed[3 * r + 1];
  if (entropy != nullptr) entropy[r] = dmath::entropy_of(S, T);
  if (logprob != nullptr) logprob[r] = packed[3 * r + 2] - logf(S);
}

// dz (rows, tile) in the compute dtype from the tile's logits and the row statistics
template <typename D>
__global__ void lens_dlogits_kernel(D* __restrict__ dz, const float* __restrict__ z, int64_t tile,
                                    int64_t col0, const float* __restrict__ m,
                                    const float* __restrict__ packed,
                                    const int32_t* __restrict__ targets, int64_t v0,
                                    const float* __restrict__ glp, const float* __restrict__ gent) {
  const int64_t r = blockIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= tile) return;
  const float S = packed[3 * r], T = packed[3 * r + 1];
  const float logS = logf(S), H = logS - T / S;
  const float g1 = glp ? glp[r] : 0.0f, g2 = gent ? gent[r] : 0.0f;
  const bool is_t = glp != nullptr && static_cast<int64_t>(targets[r]) - v0 - col0 == j;
  dz[r * tile + j] =
      from_f<D>(dmath::lens_dlogit(z[r * tile + j] - m[r], S, logS, H, g1, g2, is_t));
}

// p (rows, tile) in the compute dtype: softmax probabilities of a tile, e^{z−m}/S
template <typename D>
__global__ void lens_probs_kernel(D* __restrict__ p, const float* __restrict__ z, int64_t tile,
                                  const float* __restrict__ m, const float* __restrict__ packed) {
  const int64_t r = blockIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= tile) return;
  p[r * tile + j] = from_f<D>(dmath::lens_prob(z[r * tile + j] - m[r], packed[3 * r]));
}

}  // namespace

void launch_lens_probs(const Tensor& p, const float* z, int64_t rows, int64_t tile, const float* m,
                       const float* packed, cudaStream_t s) {
  if (rows == 0) return;
  const dim3 grid(blocks_for(tile, kThreads), static_cast<unsigned>(rows));
  dispatch_float(p.dtype, [&](auto t) {
    using D = decltype(t);
    lens_probs_kernel<D><<<grid, kThreads, 0, s>>>(static_cast<D*>(p.data), z, tile, m, packed);
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_lens_tile_reduce(float* m, float* S, float* T, float* zt, const float* z, int64_t rows,
                             int64_t tile, int64_t col0, const int32_t* targets, int64_t v0,
                             bool first, cudaStream_t s) {
  if (rows == 0) return;
  lens_tile_reduce_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
      m, S, T, zt, z, tile, col0, targets, v0, first);
  CUDA_CHECK(cudaGetLastError());
}

void launch_lens_finish(float* mout, float* packed, const float* m, const float* S, const float* T,
                        const float* zt, int64_t rows, cudaStream_t s) {
  lens_finish_kernel<<<blocks_for(rows, kThreads), kThreads, 0, s>>>(mout, packed, m, S, T, zt,
                                                                     rows);
  CUDA_CHECK(cudaGetLastError());
}

void launch_lens_rescale(const Tensor& packed, const Tensor& m_local, const Tensor& m_global,
                         const Tensor& targets, int64_t v0, int64_t V_local, cudaStream_t s) {
  const int64_t rows = m_local.numel();
  lens_rescale_kernel<<<blocks_for(rows, kThreads), kThreads, 0, s>>>(
      packed.f32(), m_local.f32(), m_global.f32(), targets.i32(), v0, V_local, rows);
  CUDA_CHECK(cudaGetLastError());
}

void launch_lens_outputs(const Tensor& entropy, const Tensor& logprob, const Tensor& packed,
                         cudaStream_t s) {
  const int64_t rows = packed.numel() / 3;
  lens_outputs_kernel<<<blocks_for(rows, kThreads), kThreads, 0, s>>>(entropy.f32(), logprob.f32(),
                                                                      packed.f32(), rows);
  CUDA_CHECK(cudaGetLastError());
}

void launch_lens_dlogits(const Tensor& dz, const float* z, int64_t rows, int64_t tile, int64_t col0,
                         const float* m, const float* packed, const int32_t* targets, int64_t v0,
                         const float* glp, const float* gent, cudaStream_t s) {
  if (rows == 0) return;
  const dim3 grid(blocks_for(tile, kThreads), static_cast<unsigned>(rows));
  dispatch_float(dz.dtype, [&](auto t) {
    using D = decltype(t);
    lens_dlogits_kernel<D><<<grid, kThreads, 0, s>>>(static_cast<D*>(dz.data), z, tile, col0, m,
                                                     packed, targets, v0, glp, gent);
  });
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace bupo::cuda
