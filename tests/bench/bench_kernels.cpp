// Google Benchmark suite of the CPU kernels. Every benchmark reports GFLOP/s (useful FLOPs only:
// the causal half of attention) and `peak_frac` = achieved / fp32 peak of this machine, where
//   peak = the FMA throughput measured at start-up on all threads at once, with the widest ISA
//          the CPU has (AVX-512: 16 lanes, else AVX2+FMA: 8), i.e. threads × FLOP/cycle × the
//          clock the FMA pipes sustain; printed as fp32_peak with the ISA and that clock.
// Run: build/<preset>/tests/bupo_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "backend/cpu/gemm_packed.hpp"
#include "backend/cpu/linear.hpp"
#include "core/threads.hpp"
#include "lens/lens.hpp"
#include "model/model.hpp"

namespace {
using namespace bupo;

struct Peak {
  double ghz = 0, flop_per_cycle = 0, gflops = 0;
  int threads = 1;
  std::string isa;
};

// FMA throughput of one thread, all threads running it at once: 12 independent accumulators per
// thread hide the FMA latency, so this is what the FMA pipes deliver at the clock they sustain
// under this load (turbo, AVX-512 licence, a neighbour on the same physical core, all included).
// A clock probe was used before; dependent integer adds no longer count cycles on every core
// (Golden Cove folds them: 21.9 "GHz" on a Sapphire Rapids VM).
#if defined(__x86_64__)
// One body, compiled for each ISA inside its target function (a shared template would not inline
// the intrinsics across the target boundary).
#define BUPO_FMA_RATE(V, SET1, FMA, LANES)                                                       \
  V acc[12];                                                                                     \
  for (int i = 0; i < 12; ++i) acc[i] = SET1(0.001f * static_cast<float>(i));                    \
  const V b = SET1(0.999f), c = SET1(1e-4f);                                                     \
  const int64_t n = 20000000;                                                                    \
  const auto t0 = std::chrono::steady_clock::now();                                              \
  for (int64_t it = 0; it < n; ++it) {                                                           \
    _Pragma("GCC unroll 12") for (int i = 0; i < 12; ++i) acc[i] = FMA(acc[i], b, c);            \
  }                                                                                              \
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); \
  float keep[LANES];                                                                             \
  for (int i = 1; i < 12; ++i) acc[0] = FMA(acc[0], b, acc[i]);                                  \
  std::memcpy(keep, &acc[0], sizeof keep);                                                       \
  benchmark::DoNotOptimize(keep[0]);                                                             \
  return 2.0 * LANES * 12.0 * static_cast<double>(n) / s / 1e9;

__attribute__((target("avx512f"))) double fma_rate_avx512() {
  BUPO_FMA_RATE(__m512, _mm512_set1_ps, _mm512_fmadd_ps, 16)
}
__attribute__((target("avx2,fma"))) double fma_rate_avx2(){
    BUPO_FMA_RATE(__m256, _mm256_set1_ps, _mm256_fmadd_ps, 8)}
#undef BUPO_FMA_RATE
#endif

Peak machine_peak() {
  Peak p;
  p.threads = bupo::num_threads();
  bool avx512 = false, avx2fma = false;
#if defined(__x86_64__)
  avx512 = __builtin_cpu_supports("avx512f");
  avx2fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  p.flop_per_cycle = avx512 ? 64 : avx2fma ? 32 : 8;
  p.isa = avx512 ? "AVX-512" : avx2fma ? "AVX2+FMA" : "scalar";
  double total = 0.0;
#if defined(__x86_64__)
  if (avx512 || avx2fma) {
    // Best of 5 rounds: the scheduler can start a new team's threads on one core and take a few
    // tens of ms to spread them (measured: 2 threads at half rate each in a first 30 ms round).
    for (int round = 0; round < 5; ++round) {
      double sum = 0.0;
#pragma omp parallel num_threads(p.threads) reduction(+ : sum)
      sum += avx512 ? fma_rate_avx512() : fma_rate_avx2();
      total = std::max(total, sum);
    }
  }
#endif
  p.gflops = total > 0.0 ? total : p.threads * 2.0 * p.flop_per_cycle;  // 2 GHz where unmeasured
  p.ghz = p.gflops / (p.threads * p.flop_per_cycle);  // the clock the FMA pipes ran at
  return p;
}

const Peak& peak() {
  static const Peak p = machine_peak();
  return p;
}

void report(benchmark::State& st, double flops_per_iter) {
  const double gf = flops_per_iter * static_cast<double>(st.iterations()) / 1e9;
  st.counters["GFLOP/s"] = benchmark::Counter(gf, benchmark::Counter::kIsRate);
  st.counters["peak_frac"] = benchmark::Counter(gf / peak().gflops, benchmark::Counter::kIsRate);
}

std::vector<float> randn(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Every workload below runs through the backend interface (the CPU backend), as the model does.
Backend& be() {
  return cpu_backend();
}

// y (N, out) = x (N, in) Wᵀ
void BM_Gemm(benchmark::State& st) {
  const int64_t N = st.range(0), in = st.range(1), out = st.range(2);
  auto x = randn(N * in, 1), W = randn(out * in, 2);
  std::vector<float> y(N * out);
  const Tensor xt = Tensor::host(x.data(), {N, in}), Wt = Tensor::host(W.data(), {out, in}),
               yt = Tensor::host(y.data(), {N, out});
  for (auto _ : st) {
    be().linear_forward(yt, xt, Wt, Tensor{});
    benchmark::DoNotOptimize(y.data());
  }
  report(st, 2.0 * N * in * out);
}
BENCHMARK(BM_Gemm)
    ->Args({512, 1024, 1024})
    ->Args({256, 1024, 3072})
    ->Args({2048, 2048, 2048})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The two GEMM paths side by side on one shape: range(0) = form (0: C = A·Bᵀ, the forward;
// 1: A·B, dx; 2: Aᵀ·B, dW), (1..3) = M, N, K, (4) = path (0: packed kernel, 1: OpenBLAS tiles).
void BM_GemmPath(benchmark::State& st) {
  const int form = static_cast<int>(st.range(0));
  const int64_t M = st.range(1), N = st.range(2), K = st.range(3);
  const bool ta = form == 2, tb = form == 0;
  const auto path = st.range(4) == 0 ? cpu::GemmPath::packed : cpu::GemmPath::openblas_tiles;
  if (path == cpu::GemmPath::packed && cpu::gemm_packed_isa()[0] == '\0') {
    st.SkipWithError("no packed kernel for this CPU");
    return;
  }
  auto A = randn(M * K, 1), B = randn(N * K, 2);
  std::vector<float> C(M * N);
  cpu::set_gemm_path(path);
  for (auto _ : st) {
    cpu::gemm(ta, tb, M, N, K, 1.0f, A.data(), ta ? M : K, B.data(), tb ? K : N, 0.0f, C.data(), N);
    benchmark::DoNotOptimize(C.data());
  }
  cpu::set_gemm_path(cpu::GemmPath::automatic);
  st.SetLabel(path == cpu::GemmPath::packed ? cpu::gemm_packed_isa() : "openblas-tiles");
  report(st, 2.0 * M * N * K);
}
BENCHMARK(BM_GemmPath)
    ->ArgsProduct({{0, 1, 2}, {2048}, {2048}, {2048}, {0, 1}})
    ->ArgsProduct({{0, 1, 2}, {512}, {1024}, {1024}, {0, 1}})
    ->ArgsProduct({{0}, {2048}, {576, 1536}, {576}, {0, 1}})
    ->ArgsProduct({{0, 1}, {1, 8, 32, 64, 128, 256}, {3072}, {1024}, {0, 1}})
    ->ArgsProduct({{2}, {1024}, {3072}, {8, 32, 64, 128, 256}, {0, 1}})
    ->ArgsProduct({{0}, {32}, {151936}, {1024}, {0, 1}})  // the GEMM of BM_LensChunk/32/1024
    // SmolLM2 training: a lens chunk (170 rows × 49,152 × 576), its dx, one head's attention
    ->ArgsProduct({{0}, {170}, {49152}, {576}, {0, 1}})
    ->ArgsProduct({{1}, {170}, {576}, {49152}, {0, 1}})
    ->ArgsProduct({{0}, {256}, {256}, {64}, {0, 1}})
    ->ArgsProduct({{1}, {256}, {64}, {256}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// causal GQA attention over one sequence of T tokens; range(1) = 1 adds the backward
void BM_Attention(benchmark::State& st) {
  const int64_t T = st.range(0), H = 16, Hkv = 8, D = 128;
  const bool bwd = st.range(1) != 0;
  const AttnShape s{T, H, Hkv, D};
  auto q = randn(T * H * D, 3), k = randn(T * Hkv * D, 4), v = randn(T * Hkv * D, 5),
       g = randn(T * H * D, 6);
  std::vector<float> o(q.size()), lse(T * H), dq(q.size()), dk(k.size()), dv(v.size());
  const std::vector<int64_t> cu = {0, T};
  SeqIndex seqs;
  seqs.cu = cu.data();
  seqs.S = 1;
  seqs.max_len = T;
  auto h = [](std::vector<float>& x, int64_t rows) {
    return Tensor::host(x.data(), {rows, static_cast<int64_t>(x.size()) / rows});
  };
  for (auto _ : st) {
    be().attention_forward(h(o, T), h(lse, T), h(q, T), h(k, T), h(v, T), seqs, s);
    if (bwd)
      be().attention_backward(h(dq, T), h(dk, T), h(dv, T), h(g, T), h(q, T), h(k, T), h(v, T),
                              h(o, T), h(lse, T), seqs, s);
    benchmark::DoNotOptimize(o.data());
  }
  const double fwd = 4.0 * H * D * T * (T + 1) / 2.0;  // QKᵀ and PV over the causal triangle
  report(st, bwd ? 3.5 * fwd : fwd);                   // backward: recompute S + dP, dV, dQ, dK
}
BENCHMARK(BM_Attention)
    ->Args({512, 0})
    ->Args({512, 1})
    ->Args({2048, 0})
    ->Args({2048, 1})
    ->Args({4096, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// lens entropy + target log-prob for one chunk of rows at Qwen3's vocabulary (151,936)
void BM_LensChunk(benchmark::State& st) {
  const int64_t rows = st.range(0), d = st.range(1), V = 151936;
  ParamStore ps;
  ps.add("E", {V, d}, {V, d});
  ps.finalize();
  auto e = randn(V * d, 7);
  be().upload(ps.at(0).weight(), e.data());
  auto x = randn(rows * d, 8);
  std::vector<int32_t> tgt(rows, 17);
  std::vector<float> ent(rows), lp(rows);
  Lens lens{&ps.at(0), nullptr, LensMode::Raw, 1e-6f, nullptr, rows};
  for (auto _ : st) {
    lens.forward(Tensor::host(x.data(), {rows, d}), tgt.data(), ent.data(), lp.data());
    benchmark::DoNotOptimize(ent.data());
  }
  report(st, 2.0 * rows * V * d);
  st.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(rows * st.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LensChunk)
    ->Args({32, 1024})
    ->Args({64, 2560})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// one Qwen3-0.6B-shaped decoder layer (d=1024, 16/8 heads × 128, ffn 3072), forward+backward
void BM_DecoderLayer(benchmark::State& st) {
  const int64_t T = st.range(0);
  const ModelConfig c = ModelConfig::qwen3_shape(256, 1024, 3072, 1, 16, 8, 128, 8192, false);
  Model m(c, ParallelContext::single());
  m.init_random(1);
  m.params().allocate_grads();
  std::vector<int32_t> ids(T);
  for (int64_t t = 0; t < T; ++t) ids[t] = static_cast<int32_t>((t * 31) % 256);
  const Batch b = Batch::from_sequences({ids});
  auto dH = randn(T * c.hidden_size, 9);
  Activations acts;
  for (auto _ : st) {
    m.forward(b, acts, true, 1);
    m.backward_from_layer(b, acts, 1, Tensor::host(dH.data(), {T, c.hidden_size}));
    benchmark::DoNotOptimize(acts.resid.data);
  }
  const double d = 1024, qkv = (16 + 8 + 8) * 128, ff = 3072;
  const double linear = 2.0 * T * (d * qkv + 16 * 128 * d + 3 * d * ff);
  const double attn = 4.0 * 16 * 128 * T * (T + 1) / 2.0;
  report(st, 3.0 * (linear + attn));  // forward + backward ≈ 3 × forward
  st.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(T * st.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecoderLayer)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  bupo::set_num_threads(0);
  benchmark::Initialize(&argc, argv);
  const auto& p = peak();
  benchmark::AddCustomContext(
      "fp32_peak", std::to_string(p.threads) + " threads x " +
                       std::to_string(p.gflops / p.threads) + " GFLOP/s measured FMA throughput (" +
                       p.isa + ", " + std::to_string(static_cast<int>(p.flop_per_cycle)) +
                       " FLOP/cycle: an effective " + std::to_string(p.ghz) +
                       " GHz) = " + std::to_string(p.gflops) + " GFLOP/s");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
