// Host-side decisions of the CUDA backend, in plain C++ so that the CPU test binary checks them
// (tests/unit/test_cuda_plans.cpp): how a row-major GEMM becomes a column-major cuBLASLt problem
// and the key its algorithm is cached under, the launch shapes of the attention kernels, the
// vocabulary tiles of the lens, and the scratch each op asks for.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>

namespace bupo::cuda {

// ---------------------------------------------------------------------------- GEMM
// Row-major C (M, N) = op(A)·op(B) is column-major Cᵀ (N, M) = op(B)ᵀ·op(A)ᵀ: cuBLASLt's first
// operand is B, its second A. Matrix shapes below are cuBLASLt's (rows × cols, column-major).
struct LtProblem {
  bool trans_a = false, trans_b = false;    // of cuBLASLt's first (our B) and second (our A)
  int64_t m = 0, n = 0, k = 0;              // D (m × n) = op(A') (m × k) · op(B') (k × n)
  int64_t a_rows = 0, a_cols = 0, lda = 0;  // A' = our B as stored
  int64_t b_rows = 0, b_cols = 0, ldb = 0;  // B' = our A as stored
  int64_t c_rows = 0, c_cols = 0, ldc = 0;
};
LtProblem lt_problem(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                     int64_t ldc);

enum class Epilogue : uint8_t { None, Bias, BiasGradB };

// Everything the choice of a cuBLASLt algorithm depends on; algorithms are found once per key
// (cublasLtMatmulAlgoGetHeuristic) and cached, as llm.c does.
struct GemmKey {
  int a_type = 0, b_type = 0, c_type = 0;  // cudaDataType values
  LtProblem p;
  Epilogue epilogue = Epilogue::None;
  bool beta_zero = true;
  int alignment = 16;  // bytes: the largest power of two (<= 16) dividing every pointer
  bool operator==(const GemmKey& o) const;
};
struct GemmKeyHash {
  size_t operator()(const GemmKey& k) const;
};
int pointer_alignment(const void* a, const void* b, const void* c);

// ---------------------------------------------------------------------------- attention
// One warp per (query row, head): lanes split the head dimension (up to 8 elements each), keys
// are visited in order with an online softmax; blocks of kWarps warps take consecutive rows.
struct AttnLaunch {
  static constexpr int kWarps = 4;
  unsigned grid_x = 0, grid_y = 0;  // row blocks, heads
  unsigned threads = 32 * kWarps;
  int per_lane = 0;  // head-dim elements per lane
};
// Throws (via the caller) when D > 256: the fallback kernels hold a row in registers.
AttnLaunch attention_launch(int64_t rows, int64_t heads, int64_t D);
constexpr int64_t kMaxHeadDim = 256;

// ---------------------------------------------------------------------------- the lens
// Vocabulary tiles for one chunk of rows: logits (rows, tile) in F32 scratch, at most
// `tile_bytes` of them at once; never the whole vocabulary.
struct LensTiles {
  int64_t tile = 0, count = 0;
};
LensTiles lens_tiles(int64_t rows, int64_t V_local, size_t tile_bytes);
constexpr size_t kLensTileBytes = size_t{64} << 20;

// ---------------------------------------------------------------------------- reductions
// sum_squares: a fixed grid of partial sums (fp64), then one ordered sum — deterministic.
constexpr int kSumBlocks = 256;

}  // namespace bupo::cuda
