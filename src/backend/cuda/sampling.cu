// Sampling on the GPU with the CPU sampler's semantics (backend/cpu/sampling.cpp): per row, the
// tempered softmax in fp64, inverse-CDF sampling at the row's uniform number — in token-id order
// without a cut; in probability order (ties by id, a stable descending sort) after top-k/top-p —
// and the tempered distribution's log-prob and entropy. Uniform numbers are the counter-based
// ones of the host sampler (uploaded), so a rollout is the same on either device up to the
// rounding of its logits.
#include <cub/device/device_segmented_radix_sort.cuh>

#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"

namespace bupo::cuda {
namespace {

__device__ double block_sum_d(double v) {
  return block_sum(v);
}

// entropy of softmax(z) of each row (fp64 sums), one block per row
__global__ void row_entropy_kernel(float* __restrict__ ent, const float* __restrict__ z, int64_t ld,
                                   int64_t cols) {
  const float* zr = z + static_cast<int64_t>(blockIdx.x) * ld;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, zr[j]);
  mx = block_max(mx);
  double S = 0, T = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const double w = static_cast<double>(zr[j]) - mx, e = exp(w);
    S += e;
    T += e * w;
  }
  S = block_sum_d(S);
  T = block_sum_d(T);
  if (threadIdx.x == 0) ent[blockIdx.x] = static_cast<float>(dmath::clamp_entropy(log(S) - T / S));
}

// per row: max, the tempered weights p_j = exp((z_j − m)/T) into `p` (fp64), their sum and Σp·w;
// greedy rows (T <= 0) use T = 1 for the reported distribution
__global__ void tempered_kernel(double* __restrict__ p, double* __restrict__ rowS,
                                double* __restrict__ rowT, float* __restrict__ rowM,
                                int32_t* __restrict__ argmax, const float* __restrict__ z,
                                int64_t ld, int64_t cols, const float* __restrict__ temperature) {
  const int64_t r = blockIdx.x;
  const float* zr = z + r * ld;
  const float t = temperature[r];
  const double inv_t = t > 0 ? 1.0 / t : 1.0;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, zr[j]);
  mx = block_max(mx);
  double S = 0, T = 0;
  int32_t best = INT32_MAX;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const double w = (static_cast<double>(zr[j]) - mx) * inv_t, e = exp(w);
    p[r * cols + j] = e;
    S += e;
    T += e * w;
    if (zr[j] == mx && j < best) best = static_cast<int32_t>(j);
  }
  S = block_sum_d(S);
  T = block_sum_d(T);
  __shared__ int32_t smin;
  if (threadIdx.x == 0) smin = INT32_MAX;
  __syncthreads();
  atomicMin(&smin, best);  // the first index of the max (an order-free choice)
  __syncthreads();
  if (threadIdx.x == 0) {
    rowS[r] = S;
    rowT[r] = T;
    rowM[r] = mx;
    argmax[r] = smin;
  }
}

__global__ void iota_rows_kernel(int32_t* __restrict__ idx, int64_t rows, int64_t cols) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < rows * cols) idx[i] = static_cast<int32_t>(i % cols);
}
__global__ void offsets_kernel(int32_t* __restrict__ off, int64_t rows, int64_t cols) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i <= rows) off[i] = static_cast<int32_t>(i * cols);
}

// one thread per row: the cut, the inverse CDF, the reported log-prob and entropy. `order`/`sp`
// hold each row's ids and weights sorted by weight (descending, ties by id) when a cut is on.
__global__ void pick_kernel(int32_t* __restrict__ token, float* __restrict__ logprob,
                            float* __restrict__ entropy, const double* __restrict__ p,
                            const double* __restrict__ sp, const int32_t* __restrict__ order,
                            const double* __restrict__ rowS, const double* __restrict__ rowT,
                            const float* __restrict__ rowM, const int32_t* __restrict__ argmax,
                            const float* __restrict__ z, int64_t ld, int64_t cols,
                            const float* __restrict__ temperature,
                            const double* __restrict__ uniform, float top_p, int64_t top_k,
                            int64_t rows) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const double S = rowS[r], logS = log(S);
  entropy[r] = static_cast<float>(dmath::clamp_entropy(logS - rowT[r] / S));
  const float t = temperature[r];
  const double inv_t = t > 0 ? 1.0 / t : 1.0;
  int32_t tok;
  if (t <= 0.0f)
    tok = argmax[r];
  else if (top_k <= 0 && top_p >= 1.0f)
    tok = dmath::pick_in_id_order(p + r * cols, cols, S, uniform[r]);
  else
    tok = dmath::pick_sorted(sp + r * cols, order + r * cols,
                             dmath::cut_keep(sp + r * cols, cols, S, top_p, top_k), uniform[r]);
  token[r] = tok;
  logprob[r] = static_cast<float>(dmath::tempered_logprob(z[r * ld + tok], rowM[r], inv_t, logS));
}

}  // namespace

void launch_row_entropy(const Tensor& entropy, const Tensor& z, int64_t cols, cudaStream_t s) {
  const int64_t S = z.rows();
  if (S == 0) return;
  row_entropy_kernel<<<static_cast<unsigned>(S), kThreads, 0, s>>>(entropy.f32(), z.f32(), z.dim(1),
                                                                   cols);
  CUDA_CHECK(cudaGetLastError());
}

size_t sample_workspace_bytes(int64_t rows, int64_t cols) {
  size_t sort_bytes = 0;
  cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, sort_bytes, static_cast<const double*>(nullptr), static_cast<double*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<int>(rows * cols), static_cast<int>(rows), static_cast<const int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr));
  const size_t n = static_cast<size_t>(rows * cols);
  return 2 * n * sizeof(double) + 2 * n * sizeof(int32_t) + sort_bytes +
         static_cast<size_t>(rows + 1) * sizeof(int32_t) +
         static_cast<size_t>(rows) * (2 * sizeof(double) + sizeof(float) + sizeof(int32_t)) + 1024;
}

void launch_sample(const Tensor& token, const Tensor& logprob, const Tensor& entropy,
                   const Tensor& z, int64_t cols, const Tensor& temperature, const Tensor& uniform,
                   float top_p, int64_t top_k, void* work, size_t work_bytes, cudaStream_t s) {
  const int64_t rows = z.rows();
  if (rows == 0) return;
  const size_t n = static_cast<size_t>(rows * cols);
  char* w = static_cast<char*>(work);
  auto take = [&](size_t bytes) {
    void* p = w;
    w += (bytes + 255) / 256 * 256;
    return p;
  };
  auto* p = static_cast<double*>(take(n * sizeof(double)));
  auto* sp = static_cast<double*>(take(n * sizeof(double)));
  auto* idx = static_cast<int32_t*>(take(n * sizeof(int32_t)));
  auto* order = static_cast<int32_t*>(take(n * sizeof(int32_t)));
  auto* off = static_cast<int32_t*>(take(static_cast<size_t>(rows + 1) * sizeof(int32_t)));
  auto* rowS = static_cast<double*>(take(static_cast<size_t>(rows) * sizeof(double)));
  auto* rowT = static_cast<double*>(take(static_cast<size_t>(rows) * sizeof(double)));
  auto* rowM = static_cast<float*>(take(static_cast<size_t>(rows) * sizeof(float)));
  auto* amax = static_cast<int32_t*>(take(static_cast<size_t>(rows) * sizeof(int32_t)));
  const size_t used = static_cast<size_t>(w - static_cast<char*>(work));
  BUPO_CHECK(used <= work_bytes, "CUDA sample: workspace of ", work_bytes, " bytes, needs ", used);
  tempered_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(
      p, rowS, rowT, rowM, amax, z.f32(), z.dim(1), cols, temperature.f32());
  CUDA_CHECK(cudaGetLastError());
  const bool cut = top_k > 0 || top_p < 1.0f;
  if (cut) {  // each row's weights sorted descending; radix sort is stable, so ties keep id order
    iota_rows_kernel<<<blocks_for(static_cast<int64_t>(n), kThreads), kThreads, 0, s>>>(idx, rows,
                                                                                        cols);
    offsets_kernel<<<blocks_for(rows + 1, kThreads), kThreads, 0, s>>>(off, rows, cols);
    size_t sort_bytes = work_bytes - used;
    CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
        w, sort_bytes, p, sp, idx, order, static_cast<int>(n), static_cast<int>(rows), off, off + 1,
        0, static_cast<int>(8 * sizeof(double)), s));
  }
  pick_kernel<<<blocks_for(rows, 64), 64, 0, s>>>(
      token.i32(), logprob.f32(), entropy.f32(), p, sp, order, rowS, rowT, rowM, amax, z.f32(),
      z.dim(1), cols, temperature.f32(), uniform.f64(), top_p, top_k, rows);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace bupo::cuda
