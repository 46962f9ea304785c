#include "backend/cuda/plans.hpp"

#include <algorithm>
#include <cstring>

#include "core/error.hpp"

namespace bupo::cuda {

LtProblem lt_problem(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                     int64_t ldc) {
  LtProblem p;
  p.m = N;
  p.n = M;
  p.k = K;
  // A' = B: stored row-major (K, N) when !tb — column-major (N, K), no transpose; stored (N, K)
  // when tb — column-major (K, N), transposed to (N, K).
  p.trans_a = tb;
  p.a_rows = tb ? K : N;
  p.a_cols = tb ? N : K;
  p.lda = ldb;
  // B' = A: stored (M, K) when !ta — column-major (K, M); stored (K, M) when ta — (M, K),
  // transposed.
  p.trans_b = ta;
  p.b_rows = ta ? M : K;
  p.b_cols = ta ? K : M;
  p.ldb = lda;
  p.c_rows = N;
  p.c_cols = M;
  p.ldc = ldc;
  return p;
}

bool GemmKey::operator==(const GemmKey& o) const {
  return a_type == o.a_type && b_type == o.b_type && c_type == o.c_type &&
         p.trans_a == o.p.trans_a && p.trans_b == o.p.trans_b && p.m == o.p.m && p.n == o.p.n &&
         p.k == o.p.k && p.lda == o.p.lda && p.ldb == o.p.ldb && p.ldc == o.p.ldc &&
         epilogue == o.epilogue && beta_zero == o.beta_zero && alignment == o.alignment;
}

size_t GemmKeyHash::operator()(const GemmKey& k) const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the fields
  auto mix = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  for (int64_t v :
       {int64_t{k.a_type}, int64_t{k.b_type}, int64_t{k.c_type}, int64_t{k.p.trans_a},
        int64_t{k.p.trans_b}, k.p.m, k.p.n, k.p.k, k.p.lda, k.p.ldb, k.p.ldc,
        int64_t{static_cast<int>(k.epilogue)}, int64_t{k.beta_zero}, int64_t{k.alignment}})
    mix(static_cast<uint64_t>(v));
  return static_cast<size_t>(h);
}

int pointer_alignment(const void* a, const void* b, const void* c) {
  uintptr_t bits = 0;
  for (const void* p : {a, b, c}) bits |= reinterpret_cast<uintptr_t>(p);
  int al = 16;
  while (al > 1 && (bits & static_cast<uintptr_t>(al - 1)) != 0) al /= 2;
  return al;
}

AttnLaunch attention_launch(int64_t rows, int64_t heads, int64_t D) {
  BUPO_CHECK(D >= 1 && D <= kMaxHeadDim, "CUDA attention: head_dim ", D,
             " is outside the kernels' range 1..", kMaxHeadDim);
  AttnLaunch l;
  l.grid_x = static_cast<unsigned>((rows + AttnLaunch::kWarps - 1) / AttnLaunch::kWarps);
  l.grid_y = static_cast<unsigned>(heads);
  l.per_lane = static_cast<int>((D + 31) / 32);
  return l;
}

LensTiles lens_tiles(int64_t rows, int64_t V_local, size_t tile_bytes) {
  LensTiles t;
  const int64_t cap = std::max<int64_t>(
      256,
      static_cast<int64_t>(tile_bytes / (4 * static_cast<size_t>(std::max<int64_t>(rows, 1)))));
  t.tile = std::min<int64_t>(V_local, cap / 256 * 256);  // columns a multiple of 256 (or all)
  if (t.tile <= 0) t.tile = V_local;
  t.count = (V_local + t.tile - 1) / t.tile;
  return t;
}

}  // namespace bupo::cuda
