#include "backend_ops.hpp"

#include "cases.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace bupo::test::ops {

// ---------------------------------------------------------------------------- arrays
double Array::at(int64_t k) const {
  const auto u = static_cast<size_t>(k);
  return dtype == DType::F32 ? f[u] : dtype == DType::I32 ? i[u] : d[u];
}
Array f32(Dims s, std::vector<float> v) {
  Array a;
  a.dtype = DType::F32;
  a.shape = s;
  a.f = std::move(v);
  EXPECT_EQ(static_cast<int64_t>(a.f.size()), s.numel());
  return a;
}
Array i32(Dims s, std::vector<int32_t> v) {
  Array a;
  a.dtype = DType::I32;
  a.shape = s;
  a.i = std::move(v);
  EXPECT_EQ(static_cast<int64_t>(a.i.size()), s.numel());
  return a;
}
Array f64(Dims s, std::vector<double> v) {
  Array a;
  a.dtype = DType::F64;
  a.shape = s;
  a.d = std::move(v);
  return a;
}
Array randn(Dims s, uint64_t seed, float scale) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(s.numel()));
  for (auto& x : v) x = nd(g);
  return f32(s, std::move(v));
}

Tensor to_device(Backend& be, const Array& a) {
  const Tensor t = be.scratch().alloc(a.dtype, a.shape);
  const void* src = a.dtype == DType::F32   ? static_cast<const void*>(a.f.data())
                    : a.dtype == DType::I32 ? static_cast<const void*>(a.i.data())
                                            : static_cast<const void*>(a.d.data());
  be.upload(t, src);
  return t;
}
Array to_host(Backend& be, const Tensor& t) {
  Array a;
  a.dtype = t.dtype;
  a.shape = t.shape;
  void* dst = nullptr;
  if (t.dtype == DType::F32) {
    a.f.resize(static_cast<size_t>(t.numel()));
    dst = a.f.data();
  } else if (t.dtype == DType::I32) {
    a.i.resize(static_cast<size_t>(t.numel()));
    dst = a.i.data();
  } else {
    a.d.resize(static_cast<size_t>(t.numel()));
    dst = a.d.data();
  }
  be.download(dst, t);
  return a;
}

std::vector<Case> all_cases() {
  using namespace detail;
  std::vector<Case> cs;
  add_gemm(cs);
  add_linear(cs);
  add_rmsnorm(cs);
  add_rope(cs);
  add_attention(cs);
  add_decode(cs);
  add_swiglu(cs);
  add_rows(cs);
  add_elementwise(cs);
  add_lens(cs);
  add_sampling(cs);
  return cs;
}

// ---------------------------------------------------------------------------- checks
namespace {
std::vector<double> to_double(const Array& a) {
  std::vector<double> v(static_cast<size_t>(a.numel()));
  for (int64_t k = 0; k < a.numel(); ++k) v[static_cast<size_t>(k)] = a.at(k);
  return v;
}
}  // namespace

double nmse(const Array& got, const Array& want) {
  double num = 0, den = 0;
  for (int64_t k = 0; k < want.numel(); ++k) {
    const double e = got.at(k) - want.at(k);
    num += e * e;
    den += want.at(k) * want.at(k);
  }
  return num / std::max(den, 1e-30);
}

void check_reference(const Case& c, Backend& be) {
  ASSERT_TRUE(c.reference) << c.name;
  const Arrays got = c.run(be, c.inputs), want = c.reference(c.inputs);
  ASSERT_EQ(got.size(), want.size()) << c.name;
  for (const auto& [name, w] : want) {
    const Array& g = got.at(name);
    ASSERT_EQ(g.numel(), w.numel()) << c.name << ": " << name;
    for (int64_t k = 0; k < w.numel(); ++k) {
      if (w.dtype == DType::I32) {
        ASSERT_EQ(g.at(k), w.at(k)) << c.name << ": " << name << "[" << k << "]";
        continue;
      }
      EXPECT_NEAR(g.at(k), w.at(k), c.ref_tol * std::max(1.0, std::fabs(w.at(k))))
          << c.name << ": " << name << "[" << k << "]";
    }
  }
}

void check_gradient(const Case& c, Backend& be) {
  ASSERT_TRUE(c.backward) << c.name;
  // L = Σ_k Σ_j w_k[j] y_k[j] with random w of every output's shape
  const Arrays y0 = c.run(be, c.inputs);
  Arrays up;
  uint64_t seed = 1000;
  for (const auto& [name, y] : y0)
    if (c.fd_outputs.empty() ||
        std::find(c.fd_outputs.begin(), c.fd_outputs.end(), name) != c.fd_outputs.end())
      up[name] = randn(y.shape, seed++);
  auto loss = [&](const Arrays& in) {
    const Arrays y = c.run(be, in);
    double L = 0;
    for (const auto& [name, w] : up)
      for (int64_t k = 0; k < w.numel(); ++k) L += w.at(k) * y.at(name).at(k);
    return L;
  };
  const Arrays g = c.backward(be, c.inputs, up);
  for (const std::string& name : c.grad_inputs) {
    const Array& gi = g.at(name);
    const std::vector<double> ga = to_double(gi);
    double gmax = 0;
    for (double v : ga) gmax = std::max(gmax, std::fabs(v));
    ASSERT_GT(gmax, 0.0) << c.name << ": the gradient of " << name << " is identically zero";
    Arrays in = c.inputs;
    std::vector<float>& x = in.at(name).f;
    const size_t stride = std::max<size_t>(1, x.size() / 24);
    for (size_t i = 0; i < x.size(); i += stride) {
      const float x0 = x[i];
      const auto h = static_cast<float>(c.fd_step);
      x[i] = x0 + h;
      const double lp = loss(in);
      x[i] = x0 - h;
      const double lm = loss(in);
      x[i] = x0;
      EXPECT_NEAR(ga[i], (lp - lm) / (2.0 * h), c.fd_tol * std::max(1.0, gmax))
          << c.name << ": d/d" << name << "[" << i << "]";
    }
  }
}

void check_versus_cpu(const Case& c, Backend& be, DType precision) {
  const double bound = precision == DType::BF16 ? c.nmse_bf16 : c.nmse_f32;
  Backend& cpu = cpu_backend();
  auto compare = [&](const Arrays& got, const Arrays& want, const char* what) {
    for (const auto& [name, w] : want) {
      const Array& g = got.at(name);
      ASSERT_EQ(g.numel(), w.numel()) << c.name << ": " << name;
      if (w.dtype == DType::I32) {
        for (int64_t k = 0; k < w.numel(); ++k)
          EXPECT_EQ(g.at(k), w.at(k)) << c.name << " " << what << ": " << name << "[" << k << "]";
        continue;
      }
      EXPECT_LE(nmse(g, w), bound)
          << c.name << " " << what << ": " << name << " on " << be.name() << " vs cpu";
    }
  };
  compare(c.run(be, c.inputs), c.run(cpu, c.inputs), "forward");
  if (!c.backward) return;
  Arrays up;
  uint64_t seed = 2000;
  for (const auto& [name, y] : c.run(cpu, c.inputs)) up[name] = randn(y.shape, seed++);
  compare(c.backward(be, c.inputs, up), c.backward(cpu, c.inputs, up), "backward");
}

}  // namespace bupo::test::ops
