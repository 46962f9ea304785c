// The backend-ops test on this machine's backends: every op of the interface has a case; the CPU
// backend matches naive fp64 references and its backward ops match finite differences; an op a
// backend lacks is an error naming the op and the backend. (tests/gpu runs the same cases on CUDA
// against the CPU backend.)
#include <gtest/gtest.h>

#include <set>

#include "../backend_ops/backend_ops.hpp"

namespace bupo::test::ops {
namespace {

const std::vector<Case>& cases() {
  static const std::vector<Case> c = all_cases();
  return c;
}

TEST(BackendOps, EveryOpOfTheInterfaceHasACase) {
  std::set<Op> covered;
  for (const Case& c : cases()) covered.insert(c.ops.begin(), c.ops.end());
  for (size_t i = 0; i < kNumOps; ++i)
    EXPECT_TRUE(covered.contains(static_cast<Op>(i)))
        << "op '" << op_name(static_cast<Op>(i)) << "' has no backend-ops case";
}

TEST(BackendOps, EveryBackwardOpIsCheckedByFiniteDifferences) {
  std::set<Op> fd;
  for (const Case& c : cases())
    if (c.backward) fd.insert(c.ops.begin(), c.ops.end());
  for (Op op : {Op::LinearBackward, Op::RmsNormBackward, Op::RopeBackward, Op::AttentionBackward,
                Op::SwigluBackward, Op::EmbeddingBackward, Op::ScatterAddRows, Op::LensBackward})
    EXPECT_TRUE(fd.contains(op)) << op_name(op);
}

std::vector<size_t> cases_with(bool (*pred)(const Case&)) {
  std::vector<size_t> idx;
  const auto all = all_cases();
  for (size_t i = 0; i < all.size(); ++i)
    if (pred(all[i])) idx.push_back(i);
  return idx;
}
std::string case_name(const ::testing::TestParamInfo<size_t>& i) {
  std::string n = cases()[i.param].name;
  for (char& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return std::to_string(i.param) + "_" + n;
}

class CpuMatchesNaiveReference : public ::testing::TestWithParam<size_t> {};
TEST_P(CpuMatchesNaiveReference, Outputs) {
  check_reference(cases()[GetParam()], cpu_backend());
}
INSTANTIATE_TEST_SUITE_P(BackendOps, CpuMatchesNaiveReference,
                         ::testing::ValuesIn(cases_with([](const Case& c) {
                           return static_cast<bool>(c.reference);
                         })),
                         case_name);

class CpuBackwardMatchesFiniteDifferences : public ::testing::TestWithParam<size_t> {};
TEST_P(CpuBackwardMatchesFiniteDifferences, Gradients) {
  check_gradient(cases()[GetParam()], cpu_backend());
}
INSTANTIATE_TEST_SUITE_P(BackendOps, CpuBackwardMatchesFiniteDifferences,
                         ::testing::ValuesIn(cases_with([](const Case& c) {
                           return static_cast<bool>(c.backward);
                         })),
                         case_name);

TEST(BackendOps, AnUnsupportedOpIsAnErrorNamingTheOpAndTheBackend) {
  Backend& be = cpu_backend();  // fp32 only
  std::vector<uint16_t> h(16, 0);
  const Tensor A{h.data(), DType::BF16, Device::CPU, {4, 4}};
  try {
    be.gemm(false, false, 4, 4, 4, 1.0f, A, 4, A, 4, 0.0f, A, 4);
    FAIL() << "a bf16 GEMM ran on the fp32 CPU backend";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'cpu'"), std::string::npos) << m;
    EXPECT_NE(m.find("'gemm'"), std::string::npos) << m;
    EXPECT_NE(m.find("BF16"), std::string::npos) << m;
  }
}

TEST(BackendOps, TensorsOfAnotherDeviceAreRefused) {
  std::vector<float> h(4, 1.0f);
  const Tensor dev{h.data(), DType::F32, Device::CUDA, {4}};
  EXPECT_THROW(cpu_backend().scale(dev, 2.0f), Error);
  EXPECT_EQ(h[0], 1.0f);
}

TEST(BackendOps, ShapeMismatchesNameTheOp) {
  std::vector<float> a(6), b(5);
  try {
    cpu_backend().add(Tensor::host(a.data(), {6}), Tensor::host(a.data(), {6}),
                      Tensor::host(b.data(), {5}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("add:"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace bupo::test::ops
