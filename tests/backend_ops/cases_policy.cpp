// Backend-ops cases: embedding and row movement, elementwise and AdamW, the lens, sampling.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "cases.hpp"

namespace bupo::test::ops::detail {

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
  {
    Case d;
    d.name = "row_dots";
    d.ops = {Op::RowDots};
    d.inputs = {{"a", randn({N, C}, 23)}, {"b", randn({N, C}, 24, 3.0f)}};
    d.run = [=](Backend& be, const Arrays& in) {
      ArenaScope s(be.scratch());
      const Tensor out = be.scratch().alloc(DType::F64, {N, 3});
      be.row_dots(out, to_device(be, in.at("a")), to_device(be, in.at("b")));
      return Arrays{{"dots", to_host(be, out)}};
    };
    d.reference = [=](const Arrays& in) {
      std::vector<double> o;
      for (int64_t r = 0; r < N; ++r) {
        double ab = 0, aa = 0, bb = 0;
        for (int64_t k = 0; k < C; ++k) {
          const double x = in.at("a").at(r * C + k), y = in.at("b").at(r * C + k);
          ab += x * y;
          aa += x * x;
          bb += y * y;
        }
        o.insert(o.end(), {ab, aa, bb});
      }
      return Arrays{{"dots", f64({N, 3}, o)}};
    };
    cs.push_back(std::move(d));
  }
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
  {  // the expected row of E under the lens policy, Σ_v p_v E_v
    Case e;
    e.name = "lens_expectation";
    e.ops = {Op::LensStats, Op::LensExpectation};
    e.inputs = {{"x", x}, {"E", E}};
    e.run = [=](Backend& be, const Arrays& in) {
      ArenaScope s(be.scratch());
      const Tensor m = be.scratch().alloc_f32({n}), packed = be.scratch().alloc_f32({n, 3});
      const Tensor xd = to_device(be, in.at("x")), Ed = to_device(be, in.at("E"));
      be.lens_stats(m, packed, xd, Ed, Tensor{}, 0);
      const Tensor ebar = be.scratch().alloc_f32({n, d});
      be.lens_expectation(ebar, xd, Ed, m, packed);
      return Arrays{{"ebar", to_host(be, ebar)}};
    };
    e.reference = [=](const Arrays& in) {
      std::vector<double> o(static_cast<size_t>(n * d), 0.0);
      for (int64_t r = 0; r < n; ++r) {
        std::vector<double> z(static_cast<size_t>(V));
        for (int64_t j = 0; j < V; ++j)
          for (int64_t k = 0; k < d; ++k)
            z[static_cast<size_t>(j)] += in.at("x").at(r * d + k) * in.at("E").at(j * d + k);
        const Softmax sm(z);
        for (int64_t j = 0; j < V; ++j)
          for (int64_t k = 0; k < d; ++k)
            o[static_cast<size_t>(r * d + k)] +=
                sm.p[static_cast<size_t>(j)] * in.at("E").at(j * d + k);
      }
      return Arrays{{"ebar", from_double({n, d}, o)}};
    };
    cs.push_back(std::move(e));
  }
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

}  // namespace bupo::test::ops::detail
