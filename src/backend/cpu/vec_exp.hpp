// exp on 16 floats at once, for the row reductions of the lens (and attention's softmax): GCC
// vector extensions, so each file compiles it for the ISA it is built for (one AVX-512 register
// with -march of an AVX-512 machine, two AVX2 or four SSE registers elsewhere).
//
// Cephes' expf: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in two for an exact product), e^r by
// a degree-5 polynomial, 2^(n−1) put into the exponent bits and doubled (so that n = 128 at the top
// stays finite). Within 2 ulp of std::exp on [−86.5, 88.72] (tests/unit/test_kernels.cpp); 0 below
// (e^−86.5 ≈ 2.6e−38: nothing a row's Σe^{z−m} ≥ 1 can see), +inf above, NaN stays NaN. Not
// bit-identical to std::exp; the same on every thread and every call.
#pragma once
#include <cstdint>
#include <cstring>

namespace bupo::cpu::vec {

using f32x16 = float __attribute__((vector_size(64)));
using i32x16 = int32_t __attribute__((vector_size(64)));
using f64x8 = double __attribute__((vector_size(64)));
constexpr int kLanes = 16;

inline f32x16 splat(float x) {
  return f32x16{} + x;
}
inline f32x16 load(const float* p) {
  f32x16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, f32x16 v) {
  std::memcpy(p, &v, sizeof v);
}

inline f32x16 exp(f32x16 x) {
  const f32x16 hi = splat(88.7228391f), lo = splat(-86.5f);
  const f32x16 xc = x > hi ? hi : (x < lo ? lo : x);
  // n = round(x · log2 e), by adding and subtracting 1.5·2^23
  const f32x16 shifter = splat(12582912.0f);
  const f32x16 n = (xc * splat(1.44269504088896341f) + shifter) - shifter;
  f32x16 r = xc - n * splat(0.693359375f);
  r = r - n * splat(-2.12194440e-4f);
  f32x16 p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * r * r + r + splat(1.0f);
  const i32x16 ni = __builtin_convertvector(n, i32x16);
  const i32x16 bits = (ni + 126) << 23;
  f32x16 scale;
  std::memcpy(&scale, &bits, sizeof scale);
  f32x16 y = (p * scale) * splat(2.0f);
  const f32x16 inf = splat(__builtin_inff());
  y = x > hi ? inf : y;
  y = x < lo ? splat(0.0f) : y;
  return x != x ? x : y;  // NaN in, NaN out
}

// Lane-wise max, and the horizontal max / sums the reductions end with (in lane order).
inline f32x16 max(f32x16 a, f32x16 b) {
  return a > b ? a : b;
}
inline float hmax(f32x16 v) {
  float m = v[0];
  for (int i = 1; i < kLanes; ++i) m = v[i] > m ? v[i] : m;
  return m;
}
inline f64x8 low_half(f32x16 v) {
  return f64x8{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
}
inline f64x8 high_half(f32x16 v) {
  return f64x8{v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
}
inline double hsum(f64x8 v) {
  double s = 0.0;
  for (int i = 0; i < 8; ++i) s += v[i];
  return s;
}

// w = x[0..k) − m for k ≤ 16 lanes; the unused lanes at −1000 (e^w = 0, e^w·w = 0), so that a
// row's last n mod 16 values go through the same vector code as the rest.
inline f32x16 load_shifted(const float* x, int64_t k, float m) {
  if (k == kLanes) return load(x) - splat(m);
  f32x16 w = splat(-1000.0f);
  for (int64_t i = 0; i < k; ++i) w[i] = x[i] - m;
  return w;
}

// x[0..k) ← the first k ≤ 16 lanes of v.
inline void store_first(float* x, f32x16 v, int64_t k) {
  if (k == kLanes) {
    store(x, v);
    return;
  }
  for (int64_t i = 0; i < k; ++i) x[i] = v[i];
}

// x[0..n) ← e^{x − m}; returns Σ e^{x − m} in fp64 (16 lanes, then the lanes in order).
inline double exp_shifted_sum(float* x, int64_t n, float m) {
  f64x8 s0{}, s1{};
  for (int64_t j = 0; j < n; j += kLanes) {
    const int64_t k = n - j < kLanes ? n - j : kLanes;
    const f32x16 e = exp(load_shifted(x + j, k, m));
    s0 += low_half(e);
    s1 += high_half(e);
    store_first(x + j, e, k);
  }
  return hsum(s0) + hsum(s1);
}

}  // namespace bupo::cpu::vec
