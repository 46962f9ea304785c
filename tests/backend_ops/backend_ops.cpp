#include "backend_ops.hpp"

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

namespace {
Tensor zeros(Backend& be, Dims s) {
  const Tensor t = be.scratch().alloc_f32(s);
  be.zero(t);
  return t;
}
std::vector<double> to_double(const Array& a) {
  std::vector<double> v(static_cast<size_t>(a.numel()));
  for (int64_t k = 0; k < a.numel(); ++k) v[static_cast<size_t>(k)] = a.at(k);
  return v;
}
Array from_double(Dims s, const std::vector<double>& v) {
  std::vector<float> f(v.begin(), v.end());
  return f32(s, std::move(f));
}

// ---------------------------------------------------------------------------- naive references
// C (M, N) = alpha op(A) op(B) + beta C, all row-major, contiguous operands.
std::vector<double> ref_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha,
                             const Array& A, const Array& B, double beta, const Array& C) {
  std::vector<double> out(static_cast<size_t>(M * N));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0;
      for (int64_t k = 0; k < K; ++k)
        s += A.at(ta ? k * M + i : i * K + k) * B.at(tb ? j * K + k : k * N + j);
      out[static_cast<size_t>(i * N + j)] = alpha * s + beta * C.at(i * N + j);
    }
  return out;
}

struct Softmax {  // of one row z (n) in fp64
  std::vector<double> p;
  double lse = 0, entropy = 0, max = 0;
  explicit Softmax(const std::vector<double>& z) {
    max = *std::max_element(z.begin(), z.end());
    double s = 0;
    for (double v : z) s += std::exp(v - max);
    lse = max + std::log(s);
    for (double v : z) {
      p.push_back(std::exp(v - lse));
      if (p.back() > 0) entropy -= p.back() * (v - lse);
    }
  }
};

// Causal GQA attention of packed sequences; returns o (N, H·D) and lse (N, H).
void ref_attention(const Array& q, const Array& k, const Array& v, const std::vector<int64_t>& cu,
                   int64_t H, int64_t Hkv, int64_t D, std::vector<double>& o,
                   std::vector<double>& lse) {
  const int64_t N = cu.back(), g = H / Hkv;
  o.assign(static_cast<size_t>(N * H * D), 0.0);
  lse.assign(static_cast<size_t>(N * H), 0.0);
  for (size_t s = 0; s + 1 < cu.size(); ++s)
    for (int64_t i = cu[s]; i < cu[s + 1]; ++i)
      for (int64_t h = 0; h < H; ++h) {
        std::vector<double> sc;
        for (int64_t j = cu[s]; j <= i; ++j) {
          double dd = 0;
          for (int64_t c = 0; c < D; ++c)
            dd += q.at((i * H + h) * D + c) * k.at((j * Hkv + h / g) * D + c);
          sc.push_back(dd / std::sqrt(static_cast<double>(D)));
        }
        const Softmax sm(sc);
        lse[static_cast<size_t>(i * H + h)] = sm.lse;
        for (int64_t j = cu[s]; j <= i; ++j)
          for (int64_t c = 0; c < D; ++c)
            o[static_cast<size_t>((i * H + h) * D + c)] +=
                sm.p[static_cast<size_t>(j - cu[s])] * v.at((j * Hkv + h / g) * D + c);
      }
}

SeqIndex seq_index(const std::vector<int64_t>& cu) {
  SeqIndex s;
  s.cu = cu.data();
  s.S = static_cast<int64_t>(cu.size()) - 1;
  for (int64_t i = 0; i < s.S; ++i)
    s.max_len = std::max(s.max_len, cu[static_cast<size_t>(i + 1)] - cu[static_cast<size_t>(i)]);
  return s;
}

// ---------------------------------------------------------------------------- the cases
void add_gemm(std::vector<Case>& cs) {
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const int64_t M = 5, N = 7, K = 6;
      Case c;
      c.name = std::string("gemm ta=") + char('0' + ta) + " tb=" + char('0' + tb);
      c.ops = {Op::Gemm};
      c.inputs = {{"A", randn(ta ? Dims{K, M} : Dims{M, K}, 1)},
                  {"B", randn(tb ? Dims{N, K} : Dims{K, N}, 2)},
                  {"C", randn({M, N}, 3)}};
      c.run = [=](Backend& be, const Arrays& in) {
        ArenaScope s(be.scratch());
        const Tensor A = to_device(be, in.at("A")), B = to_device(be, in.at("B")),
                     C = to_device(be, in.at("C"));
        be.gemm(ta, tb, M, N, K, 0.7f, A, ta ? M : K, B, tb ? K : N, 0.3f, C, N);
        return Arrays{{"C", to_host(be, C)}};
      };
      c.reference = [=](const Arrays& in) {
        return Arrays{{"C", from_double({M, N}, ref_gemm(ta, tb, M, N, K, 0.7, in.at("A"),
                                                         in.at("B"), 0.3, in.at("C")))}};
      };
      cs.push_back(std::move(c));
    }
}

void add_linear(std::vector<Case>& cs) {
  for (bool accumulate : {false, true}) {
    const int64_t N = 6, in_f = 9, out_f = 4;
    Case c;
    c.name = accumulate ? "linear (accumulate y, dx)" : "linear (bias)";
    c.ops = {Op::LinearForward, Op::LinearBackward};
    c.inputs = {{"x", randn({N, in_f}, 4)},
                {"W", randn({out_f, in_f}, 5)},
                {"b", randn({out_f}, 6)},
                {"y0", randn({N, out_f}, 7)}};
    c.run = [=](Backend& be, const Arrays& in) {
      ArenaScope s(be.scratch());
      const Tensor x = to_device(be, in.at("x")), W = to_device(be, in.at("W"));
      const Tensor y = accumulate ? to_device(be, in.at("y0")) : be.scratch().alloc_f32({N, out_f});
      be.linear_forward(y, x, W, accumulate ? Tensor{} : to_device(be, in.at("b")), accumulate);
      return Arrays{{"y", to_host(be, y)}};
    };
    c.reference = [=](const Arrays& in) {
      std::vector<double> y(static_cast<size_t>(N * out_f));
      for (int64_t n = 0; n < N; ++n)
        for (int64_t o = 0; o < out_f; ++o) {
          double s = accumulate ? in.at("y0").at(n * out_f + o) : in.at("b").at(o);
          for (int64_t i = 0; i < in_f; ++i)
            s += in.at("x").at(n * in_f + i) * in.at("W").at(o * in_f + i);
          y[static_cast<size_t>(n * out_f + o)] = s;
        }
      return Arrays{{"y", from_double({N, out_f}, y)}};
    };
    c.backward = [=](Backend& be, const Arrays& in, const Arrays& up) {
      ArenaScope s(be.scratch());
      const Tensor x = to_device(be, in.at("x")), W = to_device(be, in.at("W")),
                   dy = to_device(be, up.at("y"));
      const Tensor dx = zeros(be, {N, in_f}), dW = zeros(be, {out_f, in_f}),
                   db = zeros(be, {out_f});
      be.linear_backward(dx, dW, accumulate ? Tensor{} : db, dy, x, W, accumulate);
      Arrays g{{"x", to_host(be, dx)}, {"W", to_host(be, dW)}};
      if (!accumulate) g["b"] = to_host(be, db);
      return g;
    };
    c.grad_inputs =
        accumulate ? std::vector<std::string>{"x", "W"} : std::vector<std::string>{"x", "W", "b"};
    cs.push_back(std::move(c));
  }
}

void add_rmsnorm(std::vector<Case>& cs) {
  const int64_t R = 5, C = 24;
  Case c;
  c.name = "rmsnorm";
  c.ops = {Op::RmsNormForward, Op::RmsNormBackward};
  c.inputs = {{"x", randn({R, C}, 8)}, {"w", randn({C}, 9)}};
  auto fwd = [=](Backend& be, const Arrays& in, Tensor& y, Tensor& rstd) {
    y = be.scratch().alloc_f32({R, C});
    rstd = be.scratch().alloc_f32({R});
    be.rmsnorm_forward(y, rstd, to_device(be, in.at("x")), to_device(be, in.at("w")), 1e-6f);
  };
  c.run = [=](Backend& be, const Arrays& in) {
    ArenaScope s(be.scratch());
    Tensor y, rstd;
    fwd(be, in, y, rstd);
    return Arrays{{"y", to_host(be, y)}};
  };
  c.reference = [=](const Arrays& in) {
    std::vector<double> y(static_cast<size_t>(R * C));
    for (int64_t r = 0; r < R; ++r) {
      double ss = 0;
      for (int64_t k = 0; k < C; ++k) ss += in.at("x").at(r * C + k) * in.at("x").at(r * C + k);
      const double s = 1.0 / std::sqrt(ss / C + 1e-6);
      for (int64_t k = 0; k < C; ++k)
        y[static_cast<size_t>(r * C + k)] = in.at("w").at(k) * in.at("x").at(r * C + k) * s;
    }
    return Arrays{{"y", from_double({R, C}, y)}};
  };
  c.backward = [=](Backend& be, const Arrays& in, const Arrays& up) {
    ArenaScope s(be.scratch());
    Tensor y, rstd;
    fwd(be, in, y, rstd);
    const Tensor dx = be.scratch().alloc_f32({R, C}), dw = zeros(be, {C});
    be.rmsnorm_backward(dx, dw, to_device(be, up.at("y")), to_device(be, in.at("x")),
                        to_device(be, in.at("w")), rstd);
    return Arrays{{"x", to_host(be, dx)}, {"w", to_host(be, dw)}};
  };
  c.grad_inputs = {"x", "w"};
  cs.push_back(std::move(c));
}

void add_rope(std::vector<Case>& cs) {
  const int64_t N = 5, H = 3, D = 8, half = D / 2;
  std::vector<float> inv(half);
  for (int64_t i = 0; i < half; ++i)
    inv[static_cast<size_t>(i)] = static_cast<float>(std::pow(10000.0, -2.0 * i / D));
  const Array pos = i32({N}, {0, 3, 9, 100, 2}), inv_freq = f32({half}, inv);
  {
    Case c;
    c.name = "rope_tables";
    c.ops = {Op::RopeTables};
    c.inputs = {{"pos", pos}, {"inv_freq", inv_freq}};
    c.run = [=](Backend& be, const Arrays& in) {
      ArenaScope s(be.scratch());
      const Tensor cs_ = be.scratch().alloc_f32({N, half}), sn = be.scratch().alloc_f32({N, half});
      be.rope_tables(cs_, sn, to_device(be, in.at("pos")), to_device(be, in.at("inv_freq")));
      return Arrays{{"cos", to_host(be, cs_)}, {"sin", to_host(be, sn)}};
    };
    c.reference = [=](const Arrays& in) {
      std::vector<double> co, si;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < half; ++i) {
          const double a = in.at("pos").at(n) * in.at("inv_freq").at(i);
          co.push_back(std::cos(a));
          si.push_back(std::sin(a));
        }
      return Arrays{{"cos", from_double({N, half}, co)}, {"sin", from_double({N, half}, si)}};
    };
    c.ref_tol = 2e-5;  // HF forms the angle in fp32
    cs.push_back(std::move(c));
  }
  Case c;
  c.name = "rope rotate_half";
  c.ops = {Op::RopeForward, Op::RopeBackward};
  c.inputs = {{"x", randn({N, H * D}, 10)}, {"pos", pos}, {"inv_freq", inv_freq}};
  auto tables = [=](Backend& be, const Arrays& in, Tensor& co, Tensor& si) {
    co = be.scratch().alloc_f32({N, half});
    si = be.scratch().alloc_f32({N, half});
    be.rope_tables(co, si, to_device(be, in.at("pos")), to_device(be, in.at("inv_freq")));
  };
  c.run = [=](Backend& be, const Arrays& in) {
    ArenaScope s(be.scratch());
    Tensor co, si;
    tables(be, in, co, si);
    const Tensor x = to_device(be, in.at("x"));
    be.rope_forward(x, co, si, H);
    return Arrays{{"y", to_host(be, x)}};
  };
  c.reference = [=](const Arrays& in) {
    std::vector<double> y(static_cast<size_t>(N * H * D));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < D; ++i) {
          const int64_t k = i % half, b = (n * H + h) * D;
          const double ang = static_cast<float>(in.at("pos").at(n) * in.at("inv_freq").at(k));
          const double rot = i < half ? -in.at("x").at(b + i + half) : in.at("x").at(b + i - half);
          y[static_cast<size_t>(b + i)] =
              in.at("x").at(b + i) * std::cos(ang) + rot * std::sin(ang);
        }
    return Arrays{{"y", from_double({N, H * D}, y)}};
  };
  c.backward = [=](Backend& be, const Arrays& in, const Arrays& up) {
    ArenaScope s(be.scratch());
    Tensor co, si;
    tables(be, in, co, si);
    const Tensor dx = to_device(be, up.at("y"));
    be.rope_backward(dx, co, si, H);
    return Arrays{{"x", to_host(be, dx)}};
  };
  c.grad_inputs = {"x"};
  cs.push_back(std::move(c));
}

void add_attention(std::vector<Case>& cs) {
  const std::vector<int64_t> cu = {0, 5, 6, 13};
  const int64_t N = 13, H = 4, Hkv = 2, D = 8;
  Case c;
  c.name = "attention causal GQA packed";
  c.ops = {Op::AttentionForward, Op::AttentionBackward};
  c.inputs = {
      {"q", randn({N, H * D}, 11)}, {"k", randn({N, Hkv * D}, 12)}, {"v", randn({N, Hkv * D}, 13)}};
  const AttnShape sh{N, H, Hkv, D};
  auto fwd = [=](Backend& be, const Arrays& in, Tensor& o, Tensor& lse) {
    o = be.scratch().alloc_f32({N, H * D});
    lse = be.scratch().alloc_f32({N, H});
    be.attention_forward(o, lse, to_device(be, in.at("q")), to_device(be, in.at("k")),
                         to_device(be, in.at("v")), seq_index(cu), sh);
  };
  c.run = [=](Backend& be, const Arrays& in) {
    ArenaScope s(be.scratch());
    Tensor o, lse;
    fwd(be, in, o, lse);
    return Arrays{{"o", to_host(be, o)}, {"lse", to_host(be, lse)}};
  };
  c.reference = [=](const Arrays& in) {
    std::vector<double> o, lse;
    ref_attention(in.at("q"), in.at("k"), in.at("v"), cu, H, Hkv, D, o, lse);
    return Arrays{{"o", from_double({N, H * D}, o)}, {"lse", from_double({N, H}, lse)}};
  };
  c.backward = [=](Backend& be, const Arrays& in, const Arrays& up) {
    ArenaScope s(be.scratch());
    Tensor o, lse;
    fwd(be, in, o, lse);
    const Tensor dq = be.scratch().alloc_f32({N, H * D}), dk = be.scratch().alloc_f32({N, Hkv * D}),
                 dv = be.scratch().alloc_f32({N, Hkv * D});
    be.attention_backward(dq, dk, dv, to_device(be, up.at("o")), to_device(be, in.at("q")),
                          to_device(be, in.at("k")), to_device(be, in.at("v")), o, lse,
                          seq_index(cu), sh);
    return Arrays{{"q", to_host(be, dq)}, {"k", to_host(be, dk)}, {"v", to_host(be, dv)}};
  };
  c.grad_inputs = {"q", "k", "v"};
  c.fd_outputs = {"o"};  // lse is saved for the backward, not differentiated
  cs.push_back(std::move(c));
}

// A KV cache of 3 slots × 10 positions: slot 2 already holds positions 0..3; then a batch that
// continues slot 2 at positions 4, 5 and prefills slot 0 at positions 0..2.
void add_decode(std::vector<Case>& cs) {
  const int64_t slots = 3, max_len = 10, H = 4, Hkv = 2, D = 8, W = Hkv * D;
  const std::vector<int64_t> cu0 = {0, 4}, cu1 = {0, 2, 5};
  const std::vector<int32_t> pos0 = {0, 1, 2, 3}, pos1 = {4, 5, 0, 1, 2};
  const std::vector<int64_t> sl0 = {2}, sl1 = {2, 0};
  Case c;
  c.name = "kv_append + attention_decode";
  c.ops = {Op::KvAppend, Op::AttentionDecode};
  c.inputs = {{"k0", randn({4, W}, 14)},
              {"v0", randn({4, W}, 15)},
              {"k1", randn({5, W}, 16)},
              {"v1", randn({5, W}, 17)},
              {"q", randn({5, H * D}, 18)}};
  c.run = [=](Backend& be, const Arrays& in) {
    ArenaScope s(be.scratch());
    const Tensor kc = zeros(be, {slots * max_len, W}), vc = zeros(be, {slots * max_len, W});
    auto index = [&](const std::vector<int64_t>& cu, const std::vector<int32_t>& pos,
                     const std::vector<int64_t>& sl) {
      SeqIndex si = seq_index(cu);
      si.pos = pos.data();
      si.slots = sl.data();
      std::vector<int32_t> sl32(sl.begin(), sl.end()), cu32(cu.begin(), cu.end());
      si.pos_dev = to_device(be, i32({static_cast<int64_t>(pos.size())}, pos));
      si.slots_dev = to_device(be, i32({static_cast<int64_t>(sl.size())}, sl32));
      si.cu_dev = to_device(be, i32({static_cast<int64_t>(cu.size())}, cu32));
      return si;
    };
    const SeqIndex s0 = index(cu0, pos0, sl0), s1 = index(cu1, pos1, sl1);
    be.kv_append(kc, vc, to_device(be, in.at("k0")), to_device(be, in.at("v0")), max_len, s0);
    be.kv_append(kc, vc, to_device(be, in.at("k1")), to_device(be, in.at("v1")), max_len, s1);
    const Tensor o = be.scratch().alloc_f32({5, H * D});
    be.attention_decode(o, to_device(be, in.at("q")), kc, vc, max_len, s1, {5, H, Hkv, D});
    return Arrays{{"o", to_host(be, o)}, {"kc", to_host(be, kc)}, {"vc", to_host(be, vc)}};
  };
  c.reference = [=](const Arrays& in) {
    std::vector<double> kc(static_cast<size_t>(slots * max_len * W), 0.0), vc = kc;
    auto put = [&](const Array& k, const Array& v, const std::vector<int64_t>& cu,
                   const std::vector<int32_t>& pos, const std::vector<int64_t>& sl) {
      for (size_t s = 0; s + 1 < cu.size(); ++s)
        for (int64_t n = cu[s]; n < cu[s + 1]; ++n)
          for (int64_t j = 0; j < W; ++j) {
            const int64_t row = sl[s] * max_len + pos[static_cast<size_t>(n)];
            kc[static_cast<size_t>(row * W + j)] = k.at(n * W + j);
            vc[static_cast<size_t>(row * W + j)] = v.at(n * W + j);
          }
    };
    put(in.at("k0"), in.at("v0"), cu0, pos0, sl0);
    put(in.at("k1"), in.at("v1"), cu1, pos1, sl1);
    std::vector<double> o(static_cast<size_t>(5 * H * D), 0.0);
    const int64_t g = H / Hkv;
    for (size_t s = 0; s + 1 < cu1.size(); ++s)
      for (int64_t n = cu1[s]; n < cu1[s + 1]; ++n)
        for (int64_t h = 0; h < H; ++h) {
          std::vector<double> sc;
          for (int64_t p = 0; p <= pos1[static_cast<size_t>(n)]; ++p) {
            double dd = 0;
            for (int64_t c2 = 0; c2 < D; ++c2)
              dd += in.at("q").at((n * H + h) * D + c2) *
                    kc[static_cast<size_t>((sl1[s] * max_len + p) * W + (h / g) * D + c2)];
            sc.push_back(dd / std::sqrt(static_cast<double>(D)));
          }
          const Softmax sm(sc);
          for (int64_t p = 0; p <= pos1[static_cast<size_t>(n)]; ++p)
            for (int64_t c2 = 0; c2 < D; ++c2)
              o[static_cast<size_t>((n * H + h) * D + c2)] +=
                  sm.p[static_cast<size_t>(p)] *
                  vc[static_cast<size_t>((sl1[s] * max_len + p) * W + (h / g) * D + c2)];
        }
    return Arrays{{"o", from_double({5, H * D}, o)},
                  {"kc", from_double({slots * max_len, W}, kc)},
                  {"vc", from_double({slots * max_len, W}, vc)}};
  };
  cs.push_back(std::move(c));
}

void add_swiglu(std::vector<Case>& cs) {
  const int64_t n = 64;
  Case c;
  c.name = "swiglu";
  c.ops = {Op::SwigluForward, Op::SwigluBackward};
  c.inputs = {{"g", randn({n}, 19, 2.0f)}, {"u", randn({n}, 20)}};
  c.run = [=](Backend& be, const Arrays& in) {
    ArenaScope s(be.scratch());
    const Tensor a = be.scratch().alloc_f32({n});
    be.swiglu_forward(a, to_device(be, in.at("g")), to_device(be, in.at("u")));
    return Arrays{{"a", to_host(be, a)}};
  };
  c.reference = [=](const Arrays& in) {
    std::vector<double> a;
    for (int64_t i = 0; i < n; ++i)
      a.push_back(in.at("g").at(i) / (1.0 + std::exp(-in.at("g").at(i))) * in.at("u").at(i));
    return Arrays{{"a", from_double({n}, a)}};
  };
  c.backward = [=](Backend& be, const Arrays& in, const Arrays& up) {
    ArenaScope s(be.scratch());
    const Tensor dg = be.scratch().alloc_f32({n}), du = be.scratch().alloc_f32({n});
    be.swiglu_backward(dg, du, to_device(be, up.at("a")), to_device(be, in.at("g")),
                       to_device(be, in.at("u")));
    return Arrays{{"g", to_host(be, dg)}, {"u", to_host(be, du)}};
  };
  c.grad_inputs = {"g", "u"};
  cs.push_back(std::move(c));
}

void add_rows(std::vector<Case>& cs) {
  {  // a vocabulary shard holding global rows 10..15
    const int64_t C = 5, V0 = 10, Vl = 6;
    const Array ids = i32({6}, {10, 3, 15, 12, 12, 16});
    Case c;
    c.name = "embedding (vocabulary shard)";
    c.ops = {Op::EmbeddingForward, Op::EmbeddingBackward};
    c.inputs = {{"E", randn({Vl, C}, 21)}, {"ids", ids}};
    c.run = [=](Backend& be, const Arrays& in) {
      ArenaScope s(be.scratch());
      const Tensor y = be.scratch().alloc_f32({6, C});
      be.embedding_forward(y, to_device(be, in.at("ids")), to_device(be, in.at("E")), V0);
      return Arrays{{"y", to_host(be, y)}};
    };
    c.reference = [=](const Arrays& in) {
      std::vector<double> y;
      for (int64_t n = 0; n < 6; ++n)
        for (int64_t k = 0; k < C; ++k) {
          const int64_t r = static_cast<int64_t>(in.at("ids").at(n)) - V0;
          y.push_back(r >= 0 && r < Vl ? in.at("E").at(r * C + k) : 0.0);
        }
      return Arrays{{"y", from_double({6, C}, y)}};
    };
    c.backward = [=](Backend& be, const Arrays& in, const Arrays& up) {
      ArenaScope s(be.scratch());
      const Tensor dE = zeros(be, {Vl, C});
      be.embedding_backward(dE, to_device(be, in.at("ids")), to_device(be, up.at("y")), V0);
      return Arrays{{"E", to_host(be, dE)}};
    };
    c.grad_inputs = {"E"};
    cs.push_back(std::move(c));
  }
  const int64_t N = 7, C = 5;
  const Array rows = i32({4}, {3, 0, 6, 3});
  Case c;
  c.name = "gather_rows / scatter_add_rows";
  c.ops = {Op::GatherRows, Op::ScatterAddRows};
  c.inputs = {{"x", randn({N, C}, 22)}, {"rows", rows}};
  c.run = [=](Backend& be, const Arrays& in) {
    ArenaScope s(be.scratch());
    const Tensor out = be.scratch().alloc_f32({4, C});
    be.gather_rows(out, to_device(be, in.at("x")), to_device(be, in.at("rows")));
    return Arrays{{"out", to_host(be, out)}};
  };
  c.reference = [=](const Arrays& in) {
    std::vector<double> o;
    for (int64_t r = 0; r < 4; ++r)
      for (int64_t k = 0; k < C; ++k)
        o.push_back(in.at("x").at(static_cast<int64_t>(in.at("rows").at(r)) * C + k));
    return Arrays{{"out", from_double({4, C}, o)}};
  };
  c.backward = [=](Backend& be, const Arrays& in, const Arrays& up) {
    ArenaScope s(be.scratch());
    const Tensor dx = zeros(be, {N, C});
    be.scatter_add_rows(dx, to_device(be, in.at("rows")), to_device(be, up.at("out")));
    return Arrays{{"x", to_host(be, dx)}};
  };
  c.grad_inputs = {"x"};
  cs.push_back(std::move(c));
}

void add_elementwise(std::vector<Case>& cs) {
  const int64_t n = 37;
  {
    Case c;
    c.name = "add (y aliasing a)";
    c.ops = {Op::Add};
    c.inputs = {{"a", randn({n}, 23)}, {"b", randn({n}, 24)}};
    c.run = [=](Backend& be, const Arrays& in) {
      ArenaScope s(be.scratch());
      const Tensor a = to_device(be, in.at("a"));
      be.add(a, a, to_device(be, in.at("b")));
      return Arrays{{"y", to_host(be, a)}};
    };
    c.reference = [=](const Arrays& in) {
      std::vector<double> y;
      for (int64_t i = 0; i < n; ++i) y.push_back(in.at("a").at(i) + in.at("b").at(i));
      return Arrays{{"y", from_double({n}, y)}};
    };
    cs.push_back(std::move(c));
  }
  {
    Case c;
    c.name = "scale / sum_squares";
    c.ops = {Op::Scale, Op::SumSquares};
    c.inputs = {{"x", randn({n}, 25)}};
    c.run = [=](Backend& be, const Arrays& in) {
      ArenaScope s(be.scratch());
      const Tensor x = to_device(be, in.at("x"));
      const double ss = be.sum_squares(x);
      be.scale(x, 0.37f);
      return Arrays{{"x", to_host(be, x)}, {"sumsq", f64({1}, {ss})}};
    };
    c.reference = [=](const Arrays& in) {
      std::vector<double> x;
      double ss = 0;
      for (int64_t i = 0; i < n; ++i) {
        x.push_back(in.at("x").at(i) * static_cast<double>(0.37f));
        ss += in.at("x").at(i) * in.at("x").at(i);
      }
      return Arrays{{"x", from_double({n}, x)}, {"sumsq", f64({1}, {ss})}};
    };
    cs.push_back(std::move(c));
  }
  Case c;
  c.name = "adamw_update";
  c.ops = {Op::AdamwUpdate};
  Array v = randn({n}, 29);
  for (auto& x : v.f) x = x * x;  // second moments are non-negative
  c.inputs = {{"w", randn({n}, 26)}, {"g", randn({n}, 27)}, {"m", randn({n}, 28, 0.1f)}, {"v", v}};
  AdamStep a;
  a.step_size = 1e-2f / (1.0f - 0.9f * 0.9f * 0.9f);
  a.bc2_sqrt = std::sqrt(1.0f - 0.999f * 0.999f * 0.999f);
  a.decay = 1.0f - 1e-2f * 0.1f;
  a.eps = 1e-8f;
  c.run = [=](Backend& be, const Arrays& in) {
    ArenaScope s(be.scratch());
    const Tensor w = to_device(be, in.at("w")), m = to_device(be, in.at("m")),
                 vv = to_device(be, in.at("v"));
    be.adamw_update(w, to_device(be, in.at("g")), m, vv, a);
    return Arrays{{"w", to_host(be, w)}, {"m", to_host(be, m)}, {"v", to_host(be, vv)}};
  };
  c.reference = [=](const Arrays& in) {
    std::vector<double> w, m, vv;
    for (int64_t i = 0; i < n; ++i) {
      const double g = in.at("g").at(i);
      const double mi = a.beta1 * in.at("m").at(i) + (1 - static_cast<double>(a.beta1)) * g;
      const double vi = a.beta2 * in.at("v").at(i) + (1 - static_cast<double>(a.beta2)) * g * g;
      m.push_back(mi);
      vv.push_back(vi);
      w.push_back(in.at("w").at(i) * a.decay -
                  a.step_size * mi / (std::sqrt(vi) / a.bc2_sqrt + a.eps));
    }
    return Arrays{
        {"w", from_double({n}, w)}, {"m", from_double({n}, m)}, {"v", from_double({n}, vv)}};
  };
  cs.push_back(std::move(c));
}

// The lens on one chunk (V = 23, d = 6): naive softmax statistics of z = x·Eᵀ.
struct LensRef {
  std::vector<double> entropy, logprob;
  LensRef(const Array& x, const Array& E, const Array& t, int64_t n, int64_t V, int64_t d) {
    for (int64_t r = 0; r < n; ++r) {
      std::vector<double> z(static_cast<size_t>(V));
      for (int64_t j = 0; j < V; ++j)
        for (int64_t k = 0; k < d; ++k)
          z[static_cast<size_t>(j)] += x.at(r * d + k) * E.at(j * d + k);
      const Softmax sm(z);
      entropy.push_back(sm.entropy);
      logprob.push_back(z[static_cast<size_t>(t.at(r))] - sm.lse);
    }
  }
};

void add_lens(std::vector<Case>& cs) {
  const int64_t V = 23, d = 6, n = 5;
  const Array x = randn({n, d}, 30, 2.0f), E = randn({V, d}, 31), t = i32({n}, {0, 5, 22, 9, 9});
  {
    Case c;
    c.name = "lens stats / outputs / backward";
    c.ops = {Op::LensStats, Op::LensOutputs, Op::LensBackward};
    c.inputs = {{"x", x}, {"E", E}, {"t", t}};
    auto stats = [=](Backend& be, const Arrays& in, Tensor& m, Tensor& packed) {
      m = be.scratch().alloc_f32({n});
      packed = be.scratch().alloc_f32({n, 3});
      be.lens_stats(m, packed, to_device(be, in.at("x")), to_device(be, in.at("E")),
                    to_device(be, in.at("t")), 0);
    };
    c.run = [=](Backend& be, const Arrays& in) {
      ArenaScope s(be.scratch());
      Tensor m, packed;
      stats(be, in, m, packed);
      const Tensor ent = be.scratch().alloc_f32({n}), lp = be.scratch().alloc_f32({n});
      be.lens_outputs(ent, lp, packed);
      return Arrays{{"entropy", to_host(be, ent)}, {"logprob", to_host(be, lp)}};
    };
    c.reference = [=](const Arrays& in) {
      const LensRef r(in.at("x"), in.at("E"), in.at("t"), n, V, d);
      return Arrays{{"entropy", from_double({n}, r.entropy)},
                    {"logprob", from_double({n}, r.logprob)}};
    };
    c.backward = [=](Backend& be, const Arrays& in, const Arrays& up) {
      ArenaScope s(be.scratch());
      Tensor m, packed;
      stats(be, in, m, packed);
      const Tensor dx = be.scratch().alloc_f32({n, d}), dE = zeros(be, {V, d});
      be.lens_backward(dx, dE, to_device(be, in.at("x")), to_device(be, in.at("E")), m, packed,
                       to_device(be, in.at("t")), 0, to_device(be, up.at("logprob")),
                       to_device(be, up.at("entropy")));
      return Arrays{{"x", to_host(be, dx)}, {"E", to_host(be, dE)}};
    };
    c.grad_inputs = {"x", "E"};
    cs.push_back(std::move(c));
  }
  // vocabulary-parallel: two shards reduced against their own maxima, rescaled to the global one
  Case c;
  c.name = "lens_rescale (two vocabulary shards)";
  c.ops = {Op::LensStats, Op::LensRescale, Op::LensOutputs};
  c.inputs = {{"x", x}, {"E", E}, {"t", t}};
  c.run = [=](Backend& be, const Arrays& in) {
    ArenaScope s(be.scratch());
    const int64_t split = 12;
    const Array& Eh = in.at("E");
    const Array E0 = f32({split, d}, std::vector<float>(Eh.f.begin(), Eh.f.begin() + split * d));
    const Array E1 = f32({V - split, d}, std::vector<float>(Eh.f.begin() + split * d, Eh.f.end()));
    const Tensor xd = to_device(be, in.at("x")), td = to_device(be, in.at("t"));
    Tensor m[2], p[2];
    const int64_t v0[2] = {0, split}, vl[2] = {split, V - split};
    for (int k = 0; k < 2; ++k) {
      m[k] = be.scratch().alloc_f32({n});
      p[k] = be.scratch().alloc_f32({n, 3});
      be.lens_stats(m[k], p[k], xd, to_device(be, k == 0 ? E0 : E1), td, v0[k]);
    }
    const Array m0 = to_host(be, m[0]), m1 = to_host(be, m[1]);
    std::vector<float> mg(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r)
      mg[static_cast<size_t>(r)] =
          std::max(m0.f[static_cast<size_t>(r)], m1.f[static_cast<size_t>(r)]);
    const Tensor mgd = to_device(be, f32({n}, mg));
    std::vector<float> sum(static_cast<size_t>(3 * n), 0.0f);
    for (int k = 0; k < 2; ++k) {
      be.lens_rescale(p[k], m[k], mgd, td, v0[k], vl[k]);
      const Array pk = to_host(be, p[k]);
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += pk.f[i];
    }
    const Tensor ent = be.scratch().alloc_f32({n}), lp = be.scratch().alloc_f32({n});
    be.lens_outputs(ent, lp, to_device(be, f32({n, 3}, sum)));
    return Arrays{{"entropy", to_host(be, ent)}, {"logprob", to_host(be, lp)}};
  };
  c.reference = cs.back().reference;
  cs.push_back(std::move(c));
}

void add_sampling(std::vector<Case>& cs) {
  const int64_t S = 6, ld = 12, cols = 10;
  const Array z = randn({S, ld}, 32, 1.5f);
  const Array temp = f32({S}, {0.0f, 1.0f, 0.7f, 1.3f, 1.0f, 1.0f});
  const Array uni = f64({S}, {0.5, 0.02, 0.33, 0.71, 0.999, 0.6});
  {
    Case c;
    c.name = "row_entropy";
    c.ops = {Op::RowEntropy};
    c.inputs = {{"z", z}};
    c.run = [=](Backend& be, const Arrays& in) {
      ArenaScope s(be.scratch());
      const Tensor e = be.scratch().alloc_f32({S});
      be.row_entropy(e, to_device(be, in.at("z")), cols);
      return Arrays{{"entropy", to_host(be, e)}};
    };
    c.reference = [=](const Arrays& in) {
      std::vector<double> e;
      for (int64_t i = 0; i < S; ++i) {
        std::vector<double> row;
        for (int64_t j = 0; j < cols; ++j) row.push_back(in.at("z").at(i * ld + j));
        e.push_back(Softmax(row).entropy);
      }
      return Arrays{{"entropy", from_double({S}, e)}};
    };
    cs.push_back(std::move(c));
  }
  struct Cut {
    float top_p;
    int64_t top_k;
  };
  for (const Cut cut : {Cut{1.0f, 0}, Cut{1.0f, 3}, Cut{0.5f, 0}}) {
    Case c;
    c.name = "sample top_p=" + std::to_string(cut.top_p).substr(0, 3) +
             " top_k=" + std::to_string(cut.top_k);
    c.ops = {Op::Sample};
    c.inputs = {{"z", z}, {"temperature", temp}, {"uniform", uni}};
    c.run = [=](Backend& be, const Arrays& in) {
      ArenaScope s(be.scratch());
      const Tensor tok = be.scratch().alloc(DType::I32, {S}), lp = be.scratch().alloc_f32({S}),
                   ent = be.scratch().alloc_f32({S});
      be.sample(tok, lp, ent, to_device(be, in.at("z")), cols, to_device(be, in.at("temperature")),
                to_device(be, in.at("uniform")), cut.top_p, cut.top_k);
      return Arrays{
          {"token", to_host(be, tok)}, {"logprob", to_host(be, lp)}, {"entropy", to_host(be, ent)}};
    };
    c.reference = [=](const Arrays& in) {
      std::vector<int32_t> tok;
      std::vector<double> lp, ent;
      for (int64_t i = 0; i < S; ++i) {
        const double T = in.at("temperature").at(i), u = in.at("uniform").at(i);
        std::vector<double> zr;
        for (int64_t j = 0; j < cols; ++j) zr.push_back(in.at("z").at(i * ld + j));
        const auto best = static_cast<int32_t>(std::max_element(zr.begin(), zr.end()) - zr.begin());
        std::vector<double> zt = zr;
        if (T > 0)
          for (double& v : zt) v /= T;
        const Softmax sm(zt);
        ent.push_back(sm.entropy);
        int32_t k = best;
        if (T > 0) {
          std::vector<int32_t> order(static_cast<size_t>(cols));
          std::iota(order.begin(), order.end(), 0);
          size_t keep = order.size();
          if (cut.top_k > 0 || cut.top_p < 1) {
            std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
              return sm.p[static_cast<size_t>(a)] > sm.p[static_cast<size_t>(b)];
            });
            if (cut.top_k > 0) keep = static_cast<size_t>(cut.top_k);
            if (cut.top_p < 1) {
              double m = 0;
              for (size_t q = 0; q < keep; ++q) {
                m += sm.p[static_cast<size_t>(order[q])];
                if (m >= cut.top_p) {
                  keep = q + 1;
                  break;
                }
              }
            }
          }
          double mass = 0;
          for (size_t q = 0; q < keep; ++q) mass += sm.p[static_cast<size_t>(order[q])];
          double acc = 0;
          k = order[keep - 1];
          for (size_t q = 0; q < keep; ++q) {
            acc += sm.p[static_cast<size_t>(order[q])];
            if (acc > u * mass) {
              k = order[q];
              break;
            }
          }
        }
        tok.push_back(k);
        lp.push_back(std::log(sm.p[static_cast<size_t>(k)]));
      }
      return Arrays{{"token", i32({S}, tok)},
                    {"logprob", from_double({S}, lp)},
                    {"entropy", from_double({S}, ent)}};
    };
    cs.push_back(std::move(c));
  }
}
}  // namespace

std::vector<Case> all_cases() {
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

void check_versus_cpu(const Case& c, Backend& be) {
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
      EXPECT_LE(nmse(g, w), c.nmse_f32)
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
