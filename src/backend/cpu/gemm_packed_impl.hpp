// The packed fp32 GEMM, written once over a vector type and instantiated per ISA
// (gemm_avx512.cpp, gemm_avx2.cpp, each compiled for its ISA). Included only by those files.
//
//   C (M, N) = alpha · op(A) (M, K) · op(B) (K, N) + beta · C        row-major, leading dimensions
//
// The loops are BLIS's (Goto's): for each NC-wide column block and KC-deep slice of K, B's slice is
// packed once into NR-wide panels shared by all threads; each thread packs MC × KC blocks of A into
// MR-tall panels and runs the MR × NR micro-kernel over them, C's tile held in registers.
//
// Why the results do not depend on the thread count: every element of C is the sum over k in the
// same order — KC-slices in sequence, k in sequence inside a slice, one accumulator per element —
// and goes through the same store arithmetic, whichever thread computes it. Threads split only M
// and N (never K), and the tile grid depends on (M, N, K) alone. MC and the column chunks a thread
// takes can follow the thread count because they change which thread computes an element, never
// how.
//
// Everything here lives in an ISA-named namespace and uses no standard-library templates: this
// header is compiled with different -m flags in different files, and an inline function emitted in
// two such files would be merged by the linker into one copy of either ISA.
#pragma once
#include <omp.h>

#include <cstddef>
#include <cstdint>
#include <new>

namespace bupo::cpu::BUPO_GEMM_ISA {

inline int64_t imin(int64_t a, int64_t b) {
  return a < b ? a : b;
}

// Vec: W lanes; zero, load (aligned), set1, fma(a, b, c) = a·b + c, mul, add; load_n / store_n for
// the first n ≤ W lanes (masked), which the edge tiles use.
template <class Vec, int MR, int NV, int64_t KC, int64_t MC, int64_t NC>
struct PackedGemm {
  using V = typename Vec::V;
  static constexpr int W = Vec::W;
  static constexpr int NR = NV * W;
  static_assert(MC % MR == 0 && NC % NR == 0, "blocks hold whole micro-tiles");

  // Ap[(panel·kc + k)·MR + r] = A(i0 + panel·MR + r, p0 + k), zero past the last row.
  static void pack_a(bool ta, const float* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0,
                     int64_t kc, float* Ap) {
    for (int64_t ip = 0; ip < mc; ip += MR) {
      float* dst = Ap + ip * kc;
      const int64_t rows = imin(MR, mc - ip);
      if (ta) {  // A stored (K, M): a k-row of the panel is contiguous
        for (int64_t k = 0; k < kc; ++k) {
          const float* src = A + (p0 + k) * lda + i0 + ip;
          int64_t r = 0;
          for (; r < rows; ++r) dst[k * MR + r] = src[r];
          for (; r < MR; ++r) dst[k * MR + r] = 0.0f;
        }
      } else if (rows == MR) {  // A stored (M, K): MR row streams, written k-major
        const float* src[MR];
        for (int r = 0; r < MR; ++r) src[r] = A + (i0 + ip + r) * lda + p0;
        for (int64_t k = 0; k < kc; ++k)
#pragma GCC unroll 16
          for (int r = 0; r < MR; ++r) dst[k * MR + r] = src[r][k];
      } else {
        for (int64_t k = 0; k < kc; ++k)
          for (int64_t r = 0; r < MR; ++r)
            dst[k * MR + r] = r < rows ? A[(i0 + ip + r) * lda + p0 + k] : 0.0f;
      }
    }
  }

  // Bp[(panel·kc + k)·NR + c] = B(p0 + k, j0 + panel·NR + c), zero past the last column.
  static void pack_b_panel(bool tb, const float* B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0,
                           int64_t cols, float* dst) {
    if (!tb) {  // B stored (K, N): a k-row of the panel is contiguous
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = B + (p0 + k) * ldb + j0;
        int64_t c = 0;
        for (; c < cols; ++c) dst[k * NR + c] = src[c];
        for (; c < NR; ++c) dst[k * NR + c] = 0.0f;
      }
    } else {  // B stored (N, K): each column contiguous along k; transposed in 16 × 16 blocks
      constexpr int64_t T = 16;
      for (int64_t c0 = 0; c0 < NR; c0 += T)
        for (int64_t k0 = 0; k0 < kc; k0 += T) {
          const int64_t kn = imin(T, kc - k0);
          for (int64_t c = c0; c < c0 + T; ++c) {
            if (c < cols) {
              const float* src = B + (j0 + c) * ldb + p0 + k0;
              for (int64_t k = 0; k < kn; ++k) dst[(k0 + k) * NR + c] = src[k];
            } else {
              for (int64_t k = 0; k < kn; ++k) dst[(k0 + k) * NR + c] = 0.0f;
            }
          }
        }
    }
  }

  // acc = Σ_k Ap[k, r] · Bp[k, :]; then the first K-slice stores alpha·acc + beta·C (C not read
  // when beta = 0), later slices C + alpha·acc. Edge tiles (rows < MR, cols < NR) use the same
  // arithmetic through masked loads and stores.
  static void micro(int64_t kc, const float* __restrict Ap, const float* __restrict Bp, float* C,
                    int64_t ldc, int64_t rows, int64_t cols, float alpha, float beta, bool first) {
    // C's tile is read at the end; start fetching its rows now, behind the k loop.
    for (int r = 0; r < MR && r < rows; ++r) {
      __builtin_prefetch(C + r * ldc, 1, 3);
      __builtin_prefetch(C + r * ldc + cols - 1, 1, 3);
    }
    V acc[MR][NV];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[r][v] = Vec::zero();
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
      V b[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) b[v] = Vec::load(Bp + k * NR + v * W);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const V a = Vec::set1(Ap[k * MR + r]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[r][v] = Vec::fma(a, b[v], acc[r][v]);
      }
    }
    const V va = Vec::set1(alpha), vb = Vec::set1(beta);
    const bool scale = alpha != 1.0f;
    for (int r = 0; r < MR && r < rows; ++r) {
      float* c = C + r * ldc;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        const int64_t n = imin(W, cols - v * W);
        if (n <= 0) break;
        const V x = scale ? Vec::mul(va, acc[r][v]) : acc[r][v];
        V out;
        if (first && beta == 0.0f)
          out = x;
        else if (first && beta != 1.0f)
          out = Vec::fma(vb, Vec::load_n(c + v * W, n), x);
        else
          out = Vec::add(Vec::load_n(c + v * W, n), x);
        Vec::store_n(c + v * W, out, n);
      }
    }
  }

  // A thread's A-panel buffer, carved once per thread (never freed: the threads live as long as
  // the process) — nothing is allocated per call.
  static float* a_buffer() {
    thread_local float* buf =
        static_cast<float*>(::operator new[](sizeof(float) * MC * KC, std::align_val_t{64}));
    return buf;
  }
  // The calling thread's shared B buffer; the team reads it through this pointer.
  static float* b_buffer() {
    thread_local float* buf =
        static_cast<float*>(::operator new[](sizeof(float) * KC * NC, std::align_val_t{64}));
    return buf;
  }

  static void run(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
                  int threads) {
    float* Bp = b_buffer();
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      const int team = omp_get_num_threads();
      // Row blocks of at most MC rows, as many as a multiple of the team so that no thread waits
      // on a last, lone block; whole micro-panels each.
      const int64_t row_panels = (M + MR - 1) / MR;
      int64_t m_blocks = (M + MC - 1) / MC;
      m_blocks = imin(row_panels, (m_blocks + team - 1) / team * team);
      const int64_t mc_step = (row_panels + m_blocks - 1) / m_blocks * MR;
      m_blocks = (M + mc_step - 1) / mc_step;
      for (int64_t jc = 0; jc < N; jc += NC) {
        const int64_t nc = imin(NC, N - jc);
        const int64_t panels = (nc + NR - 1) / NR;
        // Columns are cut into chunks only when the row blocks alone leave threads idle.
        int64_t chunks = 1;
        if (m_blocks < 2 * team) chunks = imin(panels, (2 * team + m_blocks - 1) / m_blocks);
        const int64_t per_chunk = (panels + chunks - 1) / chunks;
        for (int64_t pc = 0; pc < K; pc += KC) {
          const int64_t kc = imin(KC, K - pc);
#pragma omp for schedule(static)
          for (int64_t jp = 0; jp < panels; ++jp)
            pack_b_panel(tb, B, ldb, pc, kc, jc + jp * NR, imin(NR, nc - jp * NR),
                         Bp + jp * kc * NR);
            // (implicit barrier: the packed slice is complete)
#pragma omp for schedule(static)
          for (int64_t item = 0; item < m_blocks * chunks; ++item) {
            const int64_t ib = item / chunks, cb = item % chunks;
            const int64_t i0 = ib * mc_step, mc = imin(mc_step, M - i0);
            const int64_t p_begin = cb * per_chunk, p_end = imin(panels, p_begin + per_chunk);
            if (p_begin >= p_end) continue;
            float* Ap = a_buffer();
            pack_a(ta, A, lda, i0, mc, pc, kc, Ap);
            for (int64_t jp = p_begin; jp < p_end; ++jp) {
              const int64_t j = jc + jp * NR, cols = imin(NR, N - j);
              for (int64_t ip = 0; ip < mc; ip += MR)
                micro(kc, Ap + ip * kc, Bp + jp * kc * NR, C + (i0 + ip) * ldc + j, ldc,
                      imin(MR, mc - ip), cols, alpha, beta, pc == 0);
            }
          }
          // (implicit barrier: nobody still reads the slice when the next one is packed)
        }
      }
    }
  }
};

}  // namespace bupo::cpu::BUPO_GEMM_ISA
