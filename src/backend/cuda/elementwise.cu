// Elementwise and row-wise kernels of the CUDA backend: fill/convert, residual add, SwiGLU,
// RoPE, RMSNorm, AdamW, gradient scale and the deterministic sum of squares. Arithmetic from
// backend/device_math.hpp (checked on the CPU); accumulation in fp32 (fp64 for sums of squares).
#include "backend/cuda/cuda_common.cuh"
#include "backend/cuda/kernels.cuh"
#include "backend/cuda/plans.hpp"

#include <algorithm>

namespace bupo::cuda {
namespace {

template <typename T>
__global__ void fill_kernel(T* __restrict__ y, float v, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = from_f<T>(v);
}

template <typename D, typename S>
__global__ void convert_kernel(D* __restrict__ y, const S* __restrict__ x, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = from_f<D>(to_f<S>(x[i]));
}

template <typename T>
__global__ void add_kernel(T* y, const T* a, const T* b, int64_t n) {  // y may alias a or b
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = from_f<T>(to_f<T>(a[i]) + to_f<T>(b[i]));
}

template <typename T>
__global__ void swiglu_fwd_kernel(T* __restrict__ a, const T* __restrict__ g,
                                  const T* __restrict__ u, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) a[i] = from_f<T>(dmath::swiglu(to_f<T>(g[i]), to_f<T>(u[i])));
}

template <typename T>
__global__ void swiglu_bwd_kernel(T* __restrict__ dg, T* __restrict__ du, const T* __restrict__ da,
                                  const T* __restrict__ g, const T* __restrict__ u, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float dgi, dui;
  dmath::swiglu_backward(to_f<T>(da[i]), to_f<T>(g[i]), to_f<T>(u[i]), dgi, dui);
  dg[i] = from_f<T>(dgi);
  du[i] = from_f<T>(dui);
}

// cos/sin (N, half): the angle as an fp32 product (as HF), cos/sin in fp64 (as the CPU backend)
__global__ void rope_tables_kernel(float* __restrict__ cs, float* __restrict__ sn,
                                   const int32_t* __restrict__ pos, const float* __restrict__ inv,
                                   int64_t N, int64_t half) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= N * half) return;
  const float a = static_cast<float>(pos[i / half]) * inv[i % half];
  cs[i] = static_cast<float>(cos(static_cast<double>(a)));
  sn[i] = static_cast<float>(sin(static_cast<double>(a)));
}

// one thread per (row, head, pair)
template <typename T>
__global__ void rope_kernel(T* __restrict__ x, const float* __restrict__ cs,
                            const float* __restrict__ sn, int64_t N, int64_t H, int64_t half,
                            bool inverse) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= N * H * half) return;
  const int64_t i = t % half, nh = t / half, n = nh / H;
  T* v = x + nh * 2 * half;
  float a = to_f<T>(v[i]), b = to_f<T>(v[i + half]);
  dmath::rope_pair(a, b, cs[n * half + i], sn[n * half + i], inverse);
  v[i] = from_f<T>(a);
  v[i + half] = from_f<T>(b);
}

// one block per row: Σx² in fp32 lanes, fp64 across the block (as the CPU's fp64 sum)
template <typename T>
__global__ void rmsnorm_fwd_kernel(T* __restrict__ y, float* __restrict__ rstd,
                                   const T* __restrict__ x, const T* __restrict__ w, int64_t C,
                                   float eps) {
  const int64_t r = blockIdx.x;
  const T* xr = x + r * C;
  double ss = 0;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = to_f<T>(xr[c]);
    ss += static_cast<double>(v) * v;
  }
  ss = block_sum(ss);
  const float s = dmath::rms_rstd(ss, C, eps);
  if (threadIdx.x == 0 && rstd != nullptr) rstd[r] = s;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    y[r * C + c] = from_f<T>(to_f<T>(w[c]) * (to_f<T>(xr[c]) * s));
}

template <typename T>
__global__ void rmsnorm_bwd_dx_kernel(T* __restrict__ dx, const T* __restrict__ dy,
                                      const T* __restrict__ x, const T* __restrict__ w,
                                      const float* __restrict__ rstd, int64_t C, bool accumulate) {
  const int64_t r = blockIdx.x;
  const float s = rstd[r];
  double dot = 0;  // Σ (dy·w)·x̂
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    dot +=
        static_cast<double>(to_f<T>(dy[r * C + c])) * to_f<T>(w[c]) * (to_f<T>(x[r * C + c]) * s);
  dot = block_sum(dot);
  const float mean = static_cast<float>(dot / static_cast<double>(C));
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float v =
        dmath::rms_dx(to_f<T>(dy[r * C + c]), to_f<T>(w[c]), to_f<T>(x[r * C + c]), s, mean);
    dx[r * C + c] = from_f<T>(accumulate ? to_f<T>(dx[r * C + c]) + v : v);
  }
}

// dw (C) += Σ_r dy ⊙ x̂: one thread per column, rows in order (deterministic, no atomics)
template <typename T>
__global__ void rmsnorm_bwd_dw_kernel(float* __restrict__ dw, const T* __restrict__ dy,
                                      const T* __restrict__ x, const float* __restrict__ rstd,
                                      int64_t R, int64_t C) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  double acc = 0;
  for (int64_t r = 0; r < R; ++r)
    acc += static_cast<double>(to_f<T>(dy[r * C + c])) * (to_f<T>(x[r * C + c]) * rstd[r]);
  dw[c] += static_cast<float>(acc);
}

// db (out) += Σ_n dy (N, out): one thread per column, rows in order
template <typename T>
__global__ void bias_grad_kernel(float* __restrict__ db, const T* __restrict__ dy, int64_t N,
                                 int64_t out) {
  const int64_t o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= out) return;
  float s = 0;
  for (int64_t n = 0; n < N; ++n) s += to_f<T>(dy[n * out + o]);
  db[o] += s;
}

template <typename T>
__global__ void add_bias_kernel(T* __restrict__ y, const T* __restrict__ b, int64_t n,
                                int64_t out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = from_f<T>(to_f<T>(y[i]) + to_f<T>(b[i % out]));
}

__global__ void adamw_kernel(float* __restrict__ w, const float* __restrict__ g,
                             float* __restrict__ m, float* __restrict__ v, int64_t n,
                             float step_size, float bc2_sqrt, float decay, float b1, float b2,
                             float eps) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float wi = w[i], mi = m[i], vi = v[i];
  dmath::adamw(wi, g[i], mi, vi, step_size, bc2_sqrt, decay, b1, b2, eps);
  w[i] = wi;
  m[i] = mi;
  v[i] = vi;
}

__global__ void scale_kernel(float* __restrict__ x, float c, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= c;
}

// pass 1: block b sums elements b, b + B, b + 2B, ... (a fixed partition); pass 2 adds the
// kSumBlocks partial sums in order in one thread
__global__ void sumsq_partial_kernel(double* __restrict__ part, const float* __restrict__ x,
                                     int64_t n) {
  double s = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    s += static_cast<double>(x[i]) * x[i];
  s = block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}
__global__ void sumsq_final_kernel(double* __restrict__ out, const double* __restrict__ part,
                                   int blocks) {
  double s = 0;
  for (int b = 0; b < blocks; ++b) s += part[b];
  *out = s;
}

}  // namespace

void launch_fill(const Tensor& y, float v, cudaStream_t s) {
  dispatch_float(y.dtype, [&](auto t) {
    using T = decltype(t);
    fill_kernel<T><<<blocks_for(y.numel(), kThreads), kThreads, 0, s>>>(static_cast<T*>(y.data), v,
                                                                        y.numel());
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_convert(const Tensor& y, const Tensor& x, cudaStream_t s) {
  const unsigned g = blocks_for(y.numel(), kThreads);
  if (y.dtype == DType::BF16)
    convert_kernel<bf16, float>
        <<<g, kThreads, 0, s>>>(static_cast<bf16*>(y.data), x.f32(), y.numel());
  else
    convert_kernel<float, bf16>
        <<<g, kThreads, 0, s>>>(y.f32(), static_cast<const bf16*>(x.data), y.numel());
  CUDA_CHECK(cudaGetLastError());
}

void launch_add(const Tensor& y, const Tensor& a, const Tensor& b, cudaStream_t s) {
  dispatch_float(y.dtype, [&](auto t) {
    using T = decltype(t);
    add_kernel<T><<<blocks_for(y.numel(), kThreads), kThreads, 0, s>>>(
        static_cast<T*>(y.data), static_cast<const T*>(a.data), static_cast<const T*>(b.data),
        y.numel());
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_swiglu_forward(const Tensor& a, const Tensor& g, const Tensor& u, cudaStream_t s) {
  dispatch_float(a.dtype, [&](auto t) {
    using T = decltype(t);
    swiglu_fwd_kernel<T><<<blocks_for(a.numel(), kThreads), kThreads, 0, s>>>(
        static_cast<T*>(a.data), static_cast<const T*>(g.data), static_cast<const T*>(u.data),
        a.numel());
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_swiglu_backward(const Tensor& dg, const Tensor& du, const Tensor& da, const Tensor& g,
                            const Tensor& u, cudaStream_t s) {
  dispatch_float(g.dtype, [&](auto t) {
    using T = decltype(t);
    swiglu_bwd_kernel<T><<<blocks_for(g.numel(), kThreads), kThreads, 0, s>>>(
        static_cast<T*>(dg.data), static_cast<T*>(du.data), static_cast<const T*>(da.data),
        static_cast<const T*>(g.data), static_cast<const T*>(u.data), g.numel());
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_rope_tables(const Tensor& cs, const Tensor& sn, const Tensor& pos,
                        const Tensor& inv_freq, cudaStream_t s) {
  const int64_t N = pos.numel(), half = inv_freq.numel();
  rope_tables_kernel<<<blocks_for(N * half, kThreads), kThreads, 0, s>>>(
      cs.f32(), sn.f32(), pos.i32(), inv_freq.f32(), N, half);
  CUDA_CHECK(cudaGetLastError());
}

void launch_rope(const Tensor& x, const Tensor& cs, const Tensor& sn, int64_t H, bool inverse,
                 cudaStream_t s) {
  const int64_t N = cs.rows(), half = cs.row_numel();
  dispatch_float(x.dtype, [&](auto t) {
    using T = decltype(t);
    rope_kernel<T><<<blocks_for(N * H * half, kThreads), kThreads, 0, s>>>(
        static_cast<T*>(x.data), cs.f32(), sn.f32(), N, H, half, inverse);
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_rmsnorm_forward(const Tensor& y, const Tensor& rstd, const Tensor& x, const Tensor& w,
                            float eps, cudaStream_t s) {
  const int64_t C = w.numel(), R = x.numel() / C;
  if (R == 0) return;
  dispatch_float(x.dtype, [&](auto t) {
    using T = decltype(t);
    rmsnorm_fwd_kernel<T><<<static_cast<unsigned>(R), kThreads, 0, s>>>(
        static_cast<T*>(y.data), rstd.f32(), static_cast<const T*>(x.data),
        static_cast<const T*>(w.data), C, eps);
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dy, const Tensor& x,
                             const Tensor& w, const Tensor& rstd, bool accumulate, cudaStream_t s) {
  const int64_t C = w.numel(), R = x.numel() / C;
  if (R == 0) return;
  dispatch_float(x.dtype, [&](auto t) {
    using T = decltype(t);
    if (!dx.empty())
      rmsnorm_bwd_dx_kernel<T><<<static_cast<unsigned>(R), kThreads, 0, s>>>(
          static_cast<T*>(dx.data), static_cast<const T*>(dy.data), static_cast<const T*>(x.data),
          static_cast<const T*>(w.data), rstd.f32(), C, accumulate);
    if (!dw.empty())
      rmsnorm_bwd_dw_kernel<T><<<blocks_for(C, kThreads), kThreads, 0, s>>>(
          dw.f32(), static_cast<const T*>(dy.data), static_cast<const T*>(x.data), rstd.f32(), R,
          C);
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_adamw(const Tensor& w, const Tensor& g, const Tensor& m, const Tensor& v,
                  const AdamStep& a, cudaStream_t s) {
  adamw_kernel<<<blocks_for(w.numel(), kThreads), kThreads, 0, s>>>(
      w.f32(), g.f32(), m.f32(), v.f32(), w.numel(), a.step_size, a.bc2_sqrt, a.decay, a.beta1,
      a.beta2, a.eps);
  CUDA_CHECK(cudaGetLastError());
}

void launch_bias_grad(const Tensor& db, const Tensor& dy, cudaStream_t s) {
  const int64_t out = db.numel(), N = dy.numel() / std::max<int64_t>(out, 1);
  dispatch_float(dy.dtype, [&](auto t) {
    using T = decltype(t);
    bias_grad_kernel<T><<<blocks_for(out, kThreads), kThreads, 0, s>>>(
        db.f32(), static_cast<const T*>(dy.data), N, out);
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_add_bias(const Tensor& y, const Tensor& b, cudaStream_t s) {
  dispatch_float(y.dtype, [&](auto t) {
    using T = decltype(t);
    add_bias_kernel<T><<<blocks_for(y.numel(), kThreads), kThreads, 0, s>>>(
        static_cast<T*>(y.data), static_cast<const T*>(b.data), y.numel(), b.numel());
  });
  CUDA_CHECK(cudaGetLastError());
}

void launch_scale(const Tensor& x, float c, cudaStream_t s) {
  scale_kernel<<<blocks_for(x.numel(), kThreads), kThreads, 0, s>>>(x.f32(), c, x.numel());
  CUDA_CHECK(cudaGetLastError());
}

void launch_sum_squares(double* out, double* partial, const Tensor& x, cudaStream_t s) {
  sumsq_partial_kernel<<<kSumBlocks, kThreads, 0, s>>>(partial, x.f32(), x.numel());
  sumsq_final_kernel<<<1, 1, 0, s>>>(out, partial, kSumBlocks);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace bupo::cuda
