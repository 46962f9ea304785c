// The backend-ops cases (tests/backend_ops) on the CUDA backend against the CPU backend, and the
// NCCL communicator on one GPU. Exits with 77 (ctest: skipped) when no GPU is visible.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "../backend_ops/backend_ops.hpp"
#include "backend/cuda/cuda_backend.hpp"
#include "parallel/nccl_comm.hpp"

namespace bupo::test::ops {
namespace {

Backend& gpu() {
  return backend_for("cuda", "tests/gpu");
}

bool supported(const Case& c, Backend& be) {
  for (Op op : c.ops)
    if (!be.supports(op, DType::F32)) return false;
  return true;
}

class CudaVersusCpu : public ::testing::TestWithParam<size_t> {};

TEST_P(CudaVersusCpu, NmseWithinBound) {
  static const std::vector<Case> cs = all_cases();
  const Case& c = cs[GetParam()];
  if (!supported(c, gpu())) GTEST_SKIP() << c.name << ": not implemented on " << gpu().name();
  check_versus_cpu(c, gpu());
  if (c.backward) check_gradient(c, gpu());
}

INSTANTIATE_TEST_SUITE_P(BackendOps, CudaVersusCpu,
                         ::testing::Range<size_t>(0, all_cases().size()));

// What the CUDA backend still lacks (issue 12 implements every op); listed, not hidden.
TEST(BackendOps, CudaImplementsEveryOp) {
  std::string missing;
  for (size_t i = 0; i < kNumOps; ++i)
    if (!gpu().supports(static_cast<Op>(i), DType::F32))
      missing += std::string(missing.empty() ? "" : ", ") + op_name(static_cast<Op>(i));
  EXPECT_TRUE(missing.empty()) << gpu().name() << " lacks: " << missing;
}

// NCCL single-GPU sanity: a communicator of one over the SelfComm bootstrap, every collective
// on device buffers, the counters, and the bandwidth of a 64 MiB all-reduce (printed).
TEST(NcclComm, SingleGpuCollectivesAndCounters) {
  Backend& be = gpu();
  cuda::NcclComm c(std::make_shared<SelfComm>(), "gpu", 30.0);
  ArenaScope s(be.scratch());
  const Array x = randn({1 << 10}, 3);
  const Tensor a = to_device(be, x), out = be.scratch().alloc_f32({1 << 10});
  be.synchronize();
  c.allreduce_sum(a.f32(), x.f.size());
  EXPECT_EQ(to_host(be, a).f, x.f);
  c.allgather(a.f32(), out.f32(), x.f.size());
  EXPECT_EQ(to_host(be, out).f, x.f);
  c.reduce_scatter_sum(a.f32(), out.f32(), x.f.size());
  EXPECT_EQ(to_host(be, out).f, x.f);
  c.broadcast(a.f32(), x.f.size() * 4, 0);
  EXPECT_EQ(to_host(be, a).f, x.f);
  EXPECT_EQ(c.stats().calls(), 4u);
  const int64_t big = int64_t{16} << 20;  // floats: 64 MiB
  const Tensor b = be.scratch().alloc_f32({big});
  c.allreduce_sum(b.f32(), static_cast<size_t>(big));
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) c.allreduce_sum(b.f32(), static_cast<size_t>(big));
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("NCCL all-reduce, 1 GPU, 64 MiB: %.1f GB/s algorithm bandwidth\n",
              10.0 * static_cast<double>(big) * 4 / sec / 1e9);
}

}  // namespace
}  // namespace bupo::test::ops

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (bupo::cuda::device_count() == 0) {
    std::printf("no CUDA device visible: GPU tests skipped\n");
    return 77;
  }
  bupo_register_cuda_backend();
  std::printf("%s\n", bupo::cuda::library_versions().c_str());
  return RUN_ALL_TESTS();
}
