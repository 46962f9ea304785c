// CUDA ops against the CPU reference ops on random inputs (ggml's rule: every accelerated op is
// tested against the CPU op). Exits with 77 (ctest: skipped) when no GPU is visible.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "../test_util.hpp"
#include "kernels/cpu/linear.hpp"
#include "kernels/cpu/rmsnorm.hpp"
#include "kernels/cuda/cuda_ops.hpp"
#include "kernels/cuda/nccl_comm.hpp"

namespace bupo {
namespace {

struct DeviceBuffer {
  float* p = nullptr;
  int64_t n = 0;
  explicit DeviceBuffer(const std::vector<float>& host)
      : p(cuda::alloc_floats(static_cast<int64_t>(host.size()))),
        n(static_cast<int64_t>(host.size())) {
    cuda::copy_to_device(p, host.data(), n);
  }
  explicit DeviceBuffer(int64_t count) : p(cuda::alloc_floats(count)), n(count) {}
  ~DeviceBuffer() { cuda::free_floats(p); }
  std::vector<float> host() const {
    std::vector<float> h(static_cast<size_t>(n));
    cuda::copy_to_host(h.data(), p, n);
    return h;
  }
};

TEST(CudaOps, RmsNormForwardMatchesCpu) {
  const int64_t R = 37, C = 1000;
  const auto x = test::randn(R * C, 1), w = test::randn(C, 2);
  std::vector<float> y(R * C), rstd(R);
  cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), R, C, 1e-6f);
  DeviceBuffer dx(x), dw(w), dy(R * C), dr(R);
  cuda::rmsnorm_forward(dy.p, dr.p, dx.p, dw.p, R, C, 1e-6f);
  cuda::synchronize();
  EXPECT_LE(test::rel_err(dy.host().data(), y.data(), R * C), 1e-5);
  EXPECT_LE(test::rel_err(dr.host().data(), rstd.data(), R), 1e-5);
}

TEST(CudaOps, LinearForwardMatchesCpu) {
  const int64_t N = 33, in = 130, out = 77;
  const auto x = test::randn(N * in, 3), W = test::randn(out * in, 4);
  std::vector<float> y(N * out);
  cpu::linear_forward(y.data(), x.data(), W.data(), nullptr, N, in, out);
  DeviceBuffer dx(x), dW(W), dy(N * out);
  cuda::linear_forward(dy.p, dx.p, dW.p, N, in, out);
  cuda::synchronize();
  EXPECT_LE(test::rel_err(dy.host().data(), y.data(), N * out), 1e-5);
}

// NCCL single-GPU sanity: a communicator of one over the SelfComm bootstrap, every collective
// on device buffers, the counters, and the bandwidth of a 64 MiB all-reduce (printed).
TEST(NcclComm, SingleGpuCollectivesAndCounters) {
  cuda::NcclComm c(std::make_shared<SelfComm>(), "gpu", 30.0);
  const auto x = test::randn(1 << 10, 3);
  DeviceBuffer a(x), out(static_cast<int64_t>(x.size()));
  c.allreduce_sum(a.p, x.size());
  EXPECT_EQ(a.host(), x);
  c.allgather(a.p, out.p, x.size());
  EXPECT_EQ(out.host(), x);
  c.reduce_scatter_sum(a.p, out.p, x.size());
  EXPECT_EQ(out.host(), x);
  c.broadcast(a.p, x.size() * 4, 0);
  EXPECT_EQ(a.host(), x);
  EXPECT_EQ(c.stats().calls(), 4u);
  const size_t big = 16u << 20;  // floats: 64 MiB
  DeviceBuffer b(static_cast<int64_t>(big));
  c.allreduce_sum(b.p, big);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) c.allreduce_sum(b.p, big);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("NCCL all-reduce, 1 GPU, 64 MiB: %.1f GB/s algorithm bandwidth\n",
              10.0 * big * 4 / s / 1e9);
}

}  // namespace
}  // namespace bupo

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (bupo::cuda::device_count() == 0) {
    std::printf("no CUDA device visible: GPU tests skipped\n");
    return 77;
  }
  std::printf("%s\n", bupo::cuda::library_versions().c_str());
  return RUN_ALL_TESTS();
}
