// Row movement on the GPU: embedding lookup and its scatter-add backward, gathering rows and
// scattering their gradients back, appending to the KV cache. The scatter-adds give each thread
// one column and walk the rows in order: deterministic, no atomics (the CPU backend's order).
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"

namespace bupo::cuda {
namespace {

// y row n = E row (ids[n] − v0), or zeros outside the shard; one block per row
template <typename T>
__global__ void embedding_fwd_kernel(T* __restrict__ y, const int32_t* __restrict__ ids,
                                     const T* __restrict__ E, int64_t C, int64_t v0, int64_t Vl) {
  const int64_t n = blockIdx.x;
  const int64_t r = static_cast<int64_t>(ids[n]) - v0;
  const bool in = r >= 0 && r < Vl;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    y[n * C + c] = in ? E[r * C + c] : from_f<T>(0.0f);
}

// dE (F32) += dy rows at ids; thread = column, rows in order
template <typename T>
__global__ void embedding_bwd_kernel(float* __restrict__ dE, const int32_t* __restrict__ ids,
                                     const T* __restrict__ dy, int64_t N, int64_t C, int64_t v0,
                                     int64_t Vl) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t r = static_cast<int64_t>(ids[n]) - v0;
    if (r >= 0 && r < Vl) dE[r * C + c] += to_f<T>(dy[n * C + c]);
  }
}

template <typename T>
__global__ void gather_rows_kernel(T* __restrict__ out, const T* __restrict__ x,
                                   const int32_t* __restrict__ rows, int64_t C) {
  const int64_t r = blockIdx.x;
  const int64_t src = rows[r];
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) out[r * C + c] = x[src * C + c];
}

template <typename T>
__global__ void scatter_add_rows_kernel(T* __restrict__ dx, const int32_t* __restrict__ rows,
                                        const T* __restrict__ src, int64_t R, int64_t C) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (int64_t r = 0; r < R; ++r) {
    T* d = dx + static_cast<int64_t>(rows[r]) * C + c;
    *d = from_f<T>(to_f<T>(*d) + to_f<T>(src[r * C + c]));
  }
}

// out row r = [a·b, a·a, b·b] in fp64; one block per row, fixed-order block sums
template <typename T>
__global__ void row_dots_kernel(double* __restrict__ out, const T* __restrict__ a,
                                const T* __restrict__ b, int64_t C) {
  const int64_t r = blockIdx.x;
  double ab = 0, aa = 0, bb = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const double x = to_f<T>(a[r * C + c]), y = to_f<T>(b[r * C + c]);
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  ab = block_sum(ab);
  aa = block_sum(aa);
  bb = block_sum(bb);
  if (threadIdx.x != 0) return;
  out[3 * r] = ab;
  out[3 * r + 1] = aa;
  out[3 * r + 2] = bb;
}

// cache row (slot·max_len + pos[n]) = k, v row n; one block per row n
template <typename T>
__global__ void kv_append_kernel(T* __restrict__ kc, T* __restrict__ vc, const T* __restrict__ k,
                                 const T* __restrict__ v, const int32_t* __restrict__ cu,
                                 const int32_t* __restrict__ pos, const int32_t* __restrict__ slots,
                                 int64_t S, int64_t width, int64_t max_len) {
  const int64_t n = blockIdx.x;
  const int64_t s = dmath::sequence_of(cu, S, n);
  const int64_t row = static_cast<int64_t>(slots[s]) * max_len + pos[n];
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
    kc[row * width + j] = k[n * width + j];
    vc[row * width + j] = v[n * width + j];
  }
}

}  // namespace

void launch_row_dots(const Tensor& out, const Tensor& a, const Tensor& b, cudaStream_t s) {
  const int64_t R = a.rows();
  if (R == 0) return;
  const int64_t C = a.numel() / R;
  dispatch_float(a.dtype, [&](auto t) {
    using T = decltype(t);
    row_dots_kernel<T><<<static_cast<unsigned>(R), kThreads, 0, s>>>(
        out.f64(), static_cast<const T*>(a.data), static_cast<const T*>(b.data), C);
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_embedding_forward(const Tensor& y, const Tensor& ids, const Tensor& E,
                              int64_t vocab_start, cudaStream_t s) {
  const int64_t N = ids.numel(), C = E.row_numel();
  if (N == 0) return;
  dispatch_float(E.dtype, [&](auto t) {
    using T = decltype(t);
    embedding_fwd_kernel<T><<<static_cast<unsigned>(N), kThreads, 0, s>>>(
        static_cast<T*>(y.data), ids.i32(), static_cast<const T*>(E.data), C, vocab_start,
        E.rows());
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_embedding_backward(const Tensor& dE, const Tensor& ids, const Tensor& dy,
                               int64_t vocab_start, cudaStream_t s) {
  const int64_t N = ids.numel(), C = dE.row_numel();
  dispatch_float(dy.dtype, [&](auto t) {
    using T = decltype(t);
    embedding_bwd_kernel<T><<<blocks_for(C, kThreads), kThreads, 0, s>>>(
        dE.f32(), ids.i32(), static_cast<const T*>(dy.data), N, C, vocab_start, dE.rows());
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_gather_rows(const Tensor& out, const Tensor& x, const Tensor& rows, cudaStream_t s) {
  const int64_t R = rows.numel();
  if (R == 0) return;
  dispatch_float(x.dtype, [&](auto t) {
    using T = decltype(t);
    gather_rows_kernel<T><<<static_cast<unsigned>(R), kThreads, 0, s>>>(
        static_cast<T*>(out.data), static_cast<const T*>(x.data), rows.i32(), x.row_numel());
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_scatter_add_rows(const Tensor& dx, const Tensor& rows, const Tensor& src,
                             cudaStream_t s) {
  const int64_t C = dx.row_numel();
  dispatch_float(dx.dtype, [&](auto t) {
    using T = decltype(t);
    scatter_add_rows_kernel<T><<<blocks_for(C, kThreads), kThreads, 0, s>>>(
        static_cast<T*>(dx.data), rows.i32(), static_cast<const T*>(src.data), rows.numel(), C);
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_kv_append(const Tensor& kc, const Tensor& vc, const Tensor& k, const Tensor& v,
                      int64_t max_len, const SeqIndex& seqs, cudaStream_t s) {
  const int64_t N = seqs.N();
  if (N == 0) return;
  const int64_t width = k.numel() / N;
  dispatch_float(k.dtype, [&](auto t) {
    using T = decltype(t);
    kv_append_kernel<T><<<static_cast<unsigned>(N), kThreads, 0, s>>>(
        static_cast<T*>(kc.data), static_cast<T*>(vc.data), static_cast<const T*>(k.data),
        static_cast<const T*>(v.data), seqs.cu_dev.i32(), seqs.pos_dev.i32(), seqs.slots_dev.i32(),
        seqs.S, width, max_len);
  });
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace bupo::cuda
