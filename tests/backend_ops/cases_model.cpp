// Backend-ops cases: linear algebra, RMSNorm, RoPE, attention (prefill and KV-cache decode),
// SwiGLU.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "cases.hpp"
#include "model/rope_frequencies.hpp"

namespace bupo::test::ops::detail {

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
  // the tables for plain frequencies and for Llama-3's rope_scaling (D = 16 at theta 5e5 puts
  // frequencies in all three bands: kept, smoothed, divided by the factor)
  const std::vector<float> llama3 = rope_inv_freq(16, 500000.0, RopeScaling{8.0, 1.0, 4.0, 8192.0});
  for (const auto& [label, freqs] : {std::pair<std::string, Array>{"plain", inv_freq},
                                     std::pair<std::string, Array>{"llama3", f32({8}, llama3)}}) {
    const int64_t hf = freqs.numel();
    Case c;
    c.name = "rope_tables " + label;
    c.ops = {Op::RopeTables};
    c.inputs = {{"pos", pos}, {"inv_freq", freqs}};
    c.run = [=](Backend& be, const Arrays& in) {
      ArenaScope s(be.scratch());
      const Tensor cs_ = be.scratch().alloc_f32({N, hf}), sn = be.scratch().alloc_f32({N, hf});
      be.rope_tables(cs_, sn, to_device(be, in.at("pos")), to_device(be, in.at("inv_freq")));
      return Arrays{{"cos", to_host(be, cs_)}, {"sin", to_host(be, sn)}};
    };
    c.reference = [=](const Arrays& in) {
      std::vector<double> co, si;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < hf; ++i) {
          const double a = in.at("pos").at(n) * in.at("inv_freq").at(i);
          co.push_back(std::cos(a));
          si.push_back(std::sin(a));
        }
      return Arrays{{"cos", from_double({N, hf}, co)}, {"sin", from_double({N, hf}, si)}};
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

}  // namespace bupo::test::ops::detail
