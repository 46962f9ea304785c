// Collective bandwidth of the MPI backend (run under mpirun, e.g. `mpirun -np 2
// bupo_bench_parallel`). Every rank runs the same fixed number of iterations (adaptive iteration
// counts would let ranks disagree and deadlock); rank 0 reports. Counters, as in nccl-tests:
//   algbw = bytes / time;   busbw = algbw · (2(n-1)/n for all-reduce, (n-1)/n for all-gather and
//   reduce-scatter, 1 for send/recv);   bound = this machine's single-thread memcpy bandwidth of
//   the same size (on one host every transfer is at least one memory copy), ratio = busbw / bound.
#include <benchmark/benchmark.h>
#include <mpi.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "parallel/mpi_comm.hpp"

namespace {

std::shared_ptr<bupo::MpiComm> g_comm;

double memcpy_bw(size_t bytes) {
  std::vector<char> a(bytes, 1), b(bytes);
  std::memcpy(b.data(), a.data(), bytes);
  const int reps = static_cast<int>(std::max<size_t>(3, (256u << 20) / bytes));
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) {
    std::memcpy(b.data(), a.data(), bytes);
    benchmark::DoNotOptimize(b.data());
  }
  return static_cast<double>(bytes) * reps /
         std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

template <typename Op>
void run(benchmark::State& state, double bus_factor, Op op) {
  const auto n = static_cast<size_t>(state.range(0)) / sizeof(float);
  const double bound = memcpy_bw(n * sizeof(float));
  g_comm->barrier();
  for (auto _ : state) op(n);
  const double per_iter = static_cast<double>(n * sizeof(float));
  state.SetBytesProcessed(static_cast<int64_t>(per_iter) * state.iterations());
  state.counters["algbw_GBps"] =
      benchmark::Counter(per_iter / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["busbw_GBps"] = benchmark::Counter(per_iter * bus_factor / 1e9,
                                                    benchmark::Counter::kIsIterationInvariantRate);
  state.counters["memcpy_GBps"] = bound / 1e9;
  state.counters["ranks"] = g_comm->size();
}

void BM_AllReduce(benchmark::State& state) {
  const double n = g_comm->size();
  std::vector<float> buf(static_cast<size_t>(state.range(0)) / 4, 1.0f);
  run(state, 2.0 * (n - 1) / n, [&](size_t k) { g_comm->allreduce_sum(buf.data(), k); });
}
void BM_AllGather(benchmark::State& state) {
  const double n = g_comm->size();
  const size_t k = static_cast<size_t>(state.range(0)) / 4;
  std::vector<float> in(k / g_comm->size() + 1, 1.0f), out(in.size() * g_comm->size());
  run(state, (n - 1) / n, [&](size_t) { g_comm->allgather(in.data(), out.data(), in.size()); });
}
void BM_ReduceScatter(benchmark::State& state) {
  const double n = g_comm->size();
  const size_t k = static_cast<size_t>(state.range(0)) / 4;
  std::vector<float> in(k, 1.0f), out(k / g_comm->size() + 1);
  run(state, (n - 1) / n,
      [&](size_t) { g_comm->reduce_scatter_sum(in.data(), out.data(), k / g_comm->size()); });
}
// Pipeline hand-off: rank r sends to r+1 and receives from r-1 (a ring), as stages do.
void BM_SendRecv(benchmark::State& state) {
  const int r = g_comm->rank(), n = g_comm->size();
  std::vector<float> a(static_cast<size_t>(state.range(0)) / 4, 1.0f), b(a.size());
  run(state, 1.0, [&](size_t k) {
    g_comm->send(a.data(), k, (r + 1) % n);
    g_comm->recv(b.data(), k, (r + n - 1) % n);
  });
}

constexpr int64_t kIters = 20;
BENCHMARK(BM_AllReduce)
    ->RangeMultiplier(8)
    ->Range(4 << 10, 64 << 20)
    ->Iterations(kIters)
    ->UseRealTime();
BENCHMARK(BM_AllGather)
    ->RangeMultiplier(8)
    ->Range(4 << 10, 64 << 20)
    ->Iterations(kIters)
    ->UseRealTime();
BENCHMARK(BM_ReduceScatter)
    ->RangeMultiplier(8)
    ->Range(4 << 10, 64 << 20)
    ->Iterations(kIters)
    ->UseRealTime();
BENCHMARK(BM_SendRecv)
    ->RangeMultiplier(8)
    ->Range(4 << 10, 64 << 20)
    ->Iterations(kIters)
    ->UseRealTime();

class NullReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  bupo::MpiSession mpi(&argc, &argv);
  g_comm = std::make_shared<bupo::MpiComm>(MPI_COMM_WORLD, "world");
  benchmark::Initialize(&argc, argv);
  if (g_comm->rank() == 0) {
    benchmark::RunSpecifiedBenchmarks();
  } else {
    NullReporter null;
    benchmark::RunSpecifiedBenchmarks(&null);
  }
  g_comm->barrier();
  g_comm.reset();
  benchmark::Shutdown();
  return 0;
}
