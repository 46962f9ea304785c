// The CUDA kernels' arithmetic (backend/device_math.hpp, the __host__ __device__ functions nvcc
// compiles into the kernels) run here by g++, in each kernel's order of visits, against the CPU
// backend's ops on random inputs. What this cannot check — the kernels' indexing on a GPU, their
// block reductions, cuBLASLt — tests/gpu does on a GPU machine (tests/gpu/device_check.sh).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "../backend_ops/backend_ops.hpp"
#include "../backend_ops/cases.hpp"
#include "backend/cuda/plans.hpp"
#include "backend/device_math.hpp"
#include "io/dtype.hpp"

namespace bupo::test::ops {
namespace {

Backend& cpu() {
  return cpu_backend();
}

// |a − b| <= tol·max(1, |b|) elementwise
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * std::max(1.0, std::fabs(static_cast<double>(want[i]))))
        << what << " [" << i << "]";
}

// ---------------------------------------------------------------------------- bf16

TEST(CudaMath, Bf16RoundingIsTheHostConversion) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  std::vector<float> specials = {0.0f,       -0.0f, 1.0f,   -1.0f,   INFINITY,
                                 -INFINITY,  NAN,   1e-40f, 3.0e38f, 1.00390625f /* a tie */,
                                 1.01171875f /* a tie */};
  for (int i = 0; i < 100000; ++i) {
    uint32_t u = bits(rng);
    float f;
    std::memcpy(&f, &u, 4);
    specials.push_back(f);
  }
  for (float f : specials) {
    const uint16_t a = dmath::f32_to_bf16_bits(f), b = f32_to_bf16(f);
    ASSERT_EQ(a, b) << f;
    const float back = dmath::bf16_bits_to_f32(a), want = bf16_to_f32(b);
    ASSERT_TRUE(std::memcmp(&back, &want, 4) == 0) << f;
  }
}

// ---------------------------------------------------------------------------- softmax statistics

struct Stats64 {
  double m, S, T;
};
Stats64 stats64(const float* z, int64_t n) {
  double m = -INFINITY, S = 0, T = 0;
  for (int64_t j = 0; j < n; ++j) m = std::max(m, static_cast<double>(z[j]));
  for (int64_t j = 0; j < n; ++j) {
    const double w = z[j] - m;
    S += std::exp(w);
    T += std::exp(w) * w;
  }
  return {m, S, T};
}

// a tile as lens_tile_reduce_kernel reduces it: its own max, then Σe^{w}, Σe^{w}w
dmath::SoftmaxStats tile_stats(const float* z, int64_t n) {
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) mx = std::max(mx, z[j]);
  float s = 0, t = 0;
  for (int64_t j = 0; j < n; ++j) {
    const float w = z[j] - mx, e = std::exp(w);
    s += e;
    t += e * w;
  }
  return {mx, s, t};
}

TEST(CudaMath, MergedTileStatisticsAreThoseOfTheUnion) {
  const Array z = randn({5000}, 3, 4.0f);
  const Stats64 want = stats64(z.f.data(), 5000);
  for (int64_t tile : {1, 7, 256, 1000, 5000}) {
    dmath::SoftmaxStats acc;  // empty: m = -inf, S = 0
    for (int64_t c = 0; c < 5000; c += tile)
      acc = dmath::stats_merge(acc, tile_stats(z.f.data() + c, std::min(tile, 5000 - c)));
    EXPECT_FLOAT_EQ(acc.m, static_cast<float>(want.m)) << tile;
    EXPECT_NEAR(acc.S, want.S, 2e-5 * want.S) << tile;
    EXPECT_NEAR(acc.T / acc.S, want.T / want.S, 2e-5) << tile;
    EXPECT_NEAR(dmath::entropy_of(acc.S, acc.T), std::log(want.S) - want.T / want.S, 2e-5);
  }
  // merging with the empty set is the identity, either side
  const dmath::SoftmaxStats a = tile_stats(z.f.data(), 10), e{};
  EXPECT_EQ(dmath::stats_merge(a, e).S, a.S);
  EXPECT_EQ(dmath::stats_merge(e, a).T, a.T);
  EXPECT_EQ(dmath::entropy_of(1.0f, 0.0f), 0.0f);  // one token: H = 0, not −0 or NaN
}

// The lens on the GPU: logits tile by tile (lens_tiles), merged statistics, then the vocabulary
// shards combined by stats_shift — against the CPU backend's lens_stats/lens_outputs.
TEST(CudaMath, TiledShardedLensMatchesTheCpuLens) {
  const int64_t n = 6, d = 16, V = 1500;
  const Array x = randn({n, d}, 11), E = randn({V, d}, 12, 0.7f);
  const Array tg = i32({n}, {0, 1499, 750, 3, 256, 1024});
  // the CPU lens over the whole vocabulary
  ArenaScope sc(cpu().scratch());
  const Tensor m = cpu().scratch().alloc_f32({n}), packed = cpu().scratch().alloc_f32({n, 3});
  const Tensor ent = cpu().scratch().alloc_f32({n}), lp = cpu().scratch().alloc_f32({n});
  cpu().lens_stats(m, packed, to_device(cpu(), x), to_device(cpu(), E), to_device(cpu(), tg), 0);
  cpu().lens_outputs(ent, lp, packed);
  const std::vector<float> want_h = to_host(cpu(), ent).f, want_lp = to_host(cpu(), lp).f;
  // the CUDA order: two shards [0, 700), [700, 1500); tiles of each shard; then the rescale
  const int64_t bounds[3] = {0, 700, V};
  std::vector<float> z(static_cast<size_t>(V));
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t v = 0; v < V; ++v) {
      double acc = 0;
      for (int64_t c = 0; c < d; ++c) acc += double{x.f[r * d + c]} * E.f[v * d + c];
      z[static_cast<size_t>(v)] = static_cast<float>(acc);
    }
    float gm = -INFINITY;
    dmath::SoftmaxStats shard[2];
    float zt_rel[2] = {0, 0};
    for (int s = 0; s < 2; ++s) {
      const int64_t v0 = bounds[s], Vl = bounds[s + 1] - v0;
      const cuda::LensTiles t = cuda::lens_tiles(n, Vl, 4 * 256 * n);  // tiles of 256 columns
      ASSERT_EQ(t.tile, 256);
      for (int64_t k = 0; k < t.count; ++k) {
        const int64_t c0 = k * t.tile, w = std::min(t.tile, Vl - c0);
        shard[s] = dmath::stats_merge(shard[s], tile_stats(z.data() + v0 + c0, w));
      }
      const int64_t tl = tg.i[r] - v0;
      if (tl >= 0 && tl < Vl) zt_rel[s] = z[static_cast<size_t>(tg.i[r])] - shard[s].m;
      gm = std::max(gm, shard[s].m);
    }
    float S = 0, T = 0, zt = 0;
    for (int s = 0; s < 2; ++s) {  // lens_rescale_kernel, then the all-reduce sum
      float Ss = shard[s].S, Ts = shard[s].T;
      dmath::stats_shift(Ss, Ts, shard[s].m, gm);
      S += Ss;
      T += Ts;
      const int64_t tl = tg.i[r] - bounds[s];
      if (tl >= 0 && tl < bounds[s + 1] - bounds[s]) zt += zt_rel[s] + shard[s].m - gm;
    }
    EXPECT_NEAR(dmath::entropy_of(S, T), want_h[r], 1e-5 * std::max(1.0f, want_h[r])) << r;
    EXPECT_NEAR(zt - std::log(S), want_lp[r], 1e-5 * std::max(1.0f, std::fabs(want_lp[r]))) << r;
  }
}

// The lens backward: dz of each logit by lens_dlogit, dx = dz·E, dE = dzᵀx.
TEST(CudaMath, LensDlogitGivesTheCpuLensBackward) {
  const int64_t n = 5, d = 12, V = 400;
  const Array x = randn({n, d}, 21), E = randn({V, d}, 22, 0.8f);
  const Array tg = i32({n}, {3, 399, 0, 200, 17}), glp = randn({n}, 23), gent = randn({n}, 24);
  ArenaScope sc(cpu().scratch());
  const Tensor m = cpu().scratch().alloc_f32({n}), packed = cpu().scratch().alloc_f32({n, 3});
  const Tensor xt = to_device(cpu(), x), Et = to_device(cpu(), E), tt = to_device(cpu(), tg);
  cpu().lens_stats(m, packed, xt, Et, tt, 0);
  const Tensor dx = cpu().scratch().alloc_f32({n, d}), dE = cpu().scratch().alloc_f32({V, d});
  cpu().fill(dE, 0.0f);
  cpu().lens_backward(dx, dE, xt, Et, m, packed, tt, 0, to_device(cpu(), glp),
                      to_device(cpu(), gent));
  const Array mh = to_host(cpu(), m), ph = to_host(cpu(), packed);
  std::vector<double> gdx(static_cast<size_t>(n * d)), gdE(static_cast<size_t>(V * d));
  for (int64_t r = 0; r < n; ++r) {
    const float S = ph.f[3 * r], T = ph.f[3 * r + 1], logS = std::log(S), H = logS - T / S;
    for (int64_t v = 0; v < V; ++v) {
      double zz = 0;
      for (int64_t c = 0; c < d; ++c) zz += double{x.f[r * d + c]} * E.f[v * d + c];
      const float dz = dmath::lens_dlogit(static_cast<float>(zz) - mh.f[r], S, logS, H, glp.f[r],
                                          gent.f[r], v == tg.i[r]);
      for (int64_t c = 0; c < d; ++c) {
        gdx[r * d + c] += double{dz} * E.f[v * d + c];
        gdE[v * d + c] += double{dz} * x.f[r * d + c];
      }
    }
  }
  expect_close(std::vector<float>(gdx.begin(), gdx.end()), to_host(cpu(), dx).f, 2e-5, "dx");
  expect_close(std::vector<float>(gdE.begin(), gdE.end()), to_host(cpu(), dE).f, 2e-5, "dE");
}

// ---------------------------------------------------------------------------- per-element ops

TEST(CudaMath, RmsNormForwardAndBackwardMatchTheCpu) {
  const int64_t R = 7, C = 96;
  const float eps = 1e-6f;
  const Array x = randn({R, C}, 31, 2.0f), w = randn({C}, 32), dy = randn({R, C}, 33);
  ArenaScope sc(cpu().scratch());
  const Tensor y = cpu().scratch().alloc_f32({R, C}), rs = cpu().scratch().alloc_f32({R});
  const Tensor xt = to_device(cpu(), x), wt = to_device(cpu(), w);
  cpu().rmsnorm_forward(y, rs, xt, wt, eps);
  const Tensor dx = cpu().scratch().alloc_f32({R, C}), dw = cpu().scratch().alloc_f32({C});
  cpu().fill(dw, 0.0f);
  cpu().rmsnorm_backward(dx, dw, to_device(cpu(), dy), xt, wt, rs);
  std::vector<float> gy(R * C), gdx(R * C), gdw(C), grs(R);
  std::vector<double> dw_acc(C, 0.0);
  for (int64_t r = 0; r < R; ++r) {  // rmsnorm_fwd_kernel, rmsnorm_bwd_dx_kernel
    double ss = 0;
    for (int64_t c = 0; c < C; ++c) ss += double{x.f[r * C + c]} * x.f[r * C + c];
    const float s = dmath::rms_rstd(ss, C, eps);
    grs[r] = s;
    double dot = 0;
    for (int64_t c = 0; c < C; ++c) {
      gy[r * C + c] = w.f[c] * (x.f[r * C + c] * s);
      dot += double{dy.f[r * C + c]} * w.f[c] * (x.f[r * C + c] * s);
    }
    const float mean = static_cast<float>(dot / C);
    for (int64_t c = 0; c < C; ++c) {
      gdx[r * C + c] = dmath::rms_dx(dy.f[r * C + c], w.f[c], x.f[r * C + c], s, mean);
      dw_acc[c] += double{dy.f[r * C + c]} * (x.f[r * C + c] * s);  // rmsnorm_bwd_dw_kernel
    }
  }
  for (int64_t c = 0; c < C; ++c) gdw[c] = static_cast<float>(dw_acc[c]);
  expect_close(gy, to_host(cpu(), y).f, 1e-6, "y");
  expect_close(grs, to_host(cpu(), rs).f, 1e-6, "rstd");
  expect_close(gdx, to_host(cpu(), dx).f, 1e-5, "dx");
  expect_close(gdw, to_host(cpu(), dw).f, 1e-5, "dw");
}

TEST(CudaMath, RopePairRotatesAsTheCpuRope) {
  const int64_t N = 5, H = 3, D = 8, half = D / 2;
  const Array x = randn({N, H * D}, 41), pos = i32({N}, {0, 1, 7, 100, 4095});
  std::vector<float> inv(half);
  for (int64_t i = 0; i < half; ++i)
    inv[i] = static_cast<float>(1.0 / std::pow(1e6, 2.0 * static_cast<double>(i) / D));
  ArenaScope sc(cpu().scratch());
  const Tensor cs = cpu().scratch().alloc_f32({N, half}), sn = cpu().scratch().alloc_f32({N, half});
  cpu().rope_tables(cs, sn, to_device(cpu(), pos), to_device(cpu(), f32({half}, inv)));
  const Array csh = to_host(cpu(), cs), snh = to_host(cpu(), sn);
  for (int64_t i = 0; i < N * half; ++i) {  // rope_tables_kernel
    const float a = static_cast<float>(pos.i[i / half]) * inv[i % half];
    ASSERT_EQ(csh.f[i], static_cast<float>(std::cos(static_cast<double>(a)))) << i;
    ASSERT_EQ(snh.f[i], static_cast<float>(std::sin(static_cast<double>(a)))) << i;
  }
  for (bool inverse : {false, true}) {
    const Tensor xt = to_device(cpu(), x);
    if (inverse)
      cpu().rope_backward(xt, cs, sn, H);
    else
      cpu().rope_forward(xt, cs, sn, H);
    std::vector<float> g = x.f;
    for (int64_t t = 0; t < N * H * half; ++t) {  // rope_kernel
      const int64_t i = t % half, nh = t / half, n = nh / H;
      dmath::rope_pair(g[nh * D + i], g[nh * D + i + half], csh.f[n * half + i],
                       snh.f[n * half + i], inverse);
    }
    expect_close(g, to_host(cpu(), xt).f, 1e-6, inverse ? "rope backward" : "rope forward");
  }
}

TEST(CudaMath, SwigluForwardAndBackwardMatchTheCpu) {
  const int64_t n = 257;
  const Array g = randn({n}, 51, 3.0f), u = randn({n}, 52), da = randn({n}, 53);
  ArenaScope sc(cpu().scratch());
  const Tensor a = cpu().scratch().alloc_f32({n}), dg = cpu().scratch().alloc_f32({n}),
               du = cpu().scratch().alloc_f32({n});
  const Tensor gt = to_device(cpu(), g), ut = to_device(cpu(), u);
  cpu().swiglu_forward(a, gt, ut);
  cpu().swiglu_backward(dg, du, to_device(cpu(), da), gt, ut);
  std::vector<float> ga(n), gdg(n), gdu(n);
  for (int64_t i = 0; i < n; ++i) {
    ga[i] = dmath::swiglu(g.f[i], u.f[i]);
    dmath::swiglu_backward(da.f[i], g.f[i], u.f[i], gdg[i], gdu[i]);
  }
  expect_close(ga, to_host(cpu(), a).f, 1e-6, "a");
  expect_close(gdg, to_host(cpu(), dg).f, 1e-6, "dg");
  expect_close(gdu, to_host(cpu(), du).f, 1e-6, "du");
}

TEST(CudaMath, AdamwIsTheCpuUpdateOverSteps) {
  const int64_t n = 300;
  Array w = randn({n}, 61), mm = f32({n}, std::vector<float>(n, 0.0f)), vv = mm;
  ArenaScope sc(cpu().scratch());
  const Tensor wt = to_device(cpu(), w), mt = to_device(cpu(), mm), vt = to_device(cpu(), vv);
  for (int step = 1; step <= 5; ++step) {
    const Array g = randn({n}, 100 + static_cast<uint64_t>(step));
    AdamStep a;
    const double lr = 1e-2, b1 = 0.9, b2 = 0.999;
    a.step_size = static_cast<float>(lr / (1 - std::pow(b1, step)));
    a.bc2_sqrt = static_cast<float>(std::sqrt(1 - std::pow(b2, step)));
    a.decay = static_cast<float>(1 - lr * 0.1);
    cpu().adamw_update(wt, to_device(cpu(), g), mt, vt, a);
    for (int64_t i = 0; i < n; ++i)
      dmath::adamw(w.f[i], g.f[i], mm.f[i], vv.f[i], a.step_size, a.bc2_sqrt, a.decay, a.beta1,
                   a.beta2, a.eps);
  }
  expect_close(w.f, to_host(cpu(), wt).f, 1e-6, "w");
  expect_close(mm.f, to_host(cpu(), mt).f, 1e-6, "m");
  expect_close(vv.f, to_host(cpu(), vt).f, 1e-6, "v");
}

// ---------------------------------------------------------------------------- attention

struct Packed {
  std::vector<int64_t> cu;
  std::vector<int32_t> cu32;
  int64_t N, H, Hkv, D;
};

// attention_fwd_kernel's warp for (row n, head h), visiting keys in order with online_push
void attend(const Packed& p, const Array& q, const Array& k, const Array& v, std::vector<float>& o,
            std::vector<float>& lse) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(p.D));
  const int64_t S = static_cast<int64_t>(p.cu.size()) - 1, ldq = p.H * p.D, ldk = p.Hkv * p.D;
  o.assign(static_cast<size_t>(p.N * ldq), 0.0f);
  lse.assign(static_cast<size_t>(p.N * p.H), 0.0f);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t h = 0; h < p.H; ++h) {
      const int64_t seq = dmath::sequence_of(p.cu32.data(), S, n), t0 = p.cu[seq];
      const int64_t hk = h / (p.H / p.Hkv);
      std::vector<float> acc(static_cast<size_t>(p.D), 0.0f);
      dmath::OnlineRow row;
      for (int64_t j = t0; j <= n; ++j) {
        float s = 0;
        for (int64_t c = 0; c < p.D; ++c)
          s += q.f[n * ldq + h * p.D + c] * scale * k.f[j * ldk + hk * p.D + c];
        float pr, rescale;
        dmath::online_push(row, s, pr, rescale);
        for (int64_t c = 0; c < p.D; ++c)
          acc[c] = acc[c] * rescale + pr * v.f[j * ldk + hk * p.D + c];
      }
      for (int64_t c = 0; c < p.D; ++c) o[n * ldq + h * p.D + c] = acc[c] / row.l;
      lse[n * p.H + h] = dmath::online_lse(row);
    }
}

TEST(CudaMath, OnlineSoftmaxAttentionMatchesTheCpuAttention) {
  Packed p{{0, 5, 6, 6, 13}, {0, 5, 6, 6, 13}, 13, 4, 2, 8};  // an empty sequence in the middle
  const Array q = randn({p.N, p.H * p.D}, 71), k = randn({p.N, p.Hkv * p.D}, 72),
              v = randn({p.N, p.Hkv * p.D}, 73), dout = randn({p.N, p.H * p.D}, 74);
  std::vector<float> o, lse;
  attend(p, q, k, v, o, lse);
  ArenaScope sc(cpu().scratch());
  const Tensor ot = cpu().scratch().alloc_f32({p.N, p.H * p.D}),
               lt = cpu().scratch().alloc_f32({p.N, p.H});
  SeqIndex si = detail::seq_index(p.cu);
  const AttnShape sh{p.N, p.H, p.Hkv, p.D};
  const Tensor qt = to_device(cpu(), q), kt = to_device(cpu(), k), vt = to_device(cpu(), v);
  cpu().attention_forward(ot, lt, qt, kt, vt, si, sh);
  expect_close(o, to_host(cpu(), ot).f, 1e-5, "o");
  expect_close(lse, to_host(cpu(), lt).f, 1e-5, "lse");

  // the backward kernels: dq per (row, head); dk, dv per (key row, KV head) over the group
  const float scale = 1.0f / std::sqrt(static_cast<float>(p.D));
  const int64_t ldq = p.H * p.D, ldk = p.Hkv * p.D, g = p.H / p.Hkv, S = 4;
  std::vector<float> dq(p.N * ldq, 0.0f), dk(p.N * ldk, 0.0f), dv(p.N * ldk, 0.0f);
  auto dot = [&](const float* a, const float* b) {
    float s = 0;
    for (int64_t c = 0; c < p.D; ++c) s += a[c] * b[c];
    return s;
  };
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t h = 0; h < p.H; ++h) {
      const int64_t seq = dmath::sequence_of(p.cu32.data(), S, n), hk = h / g;
      const float* qn = &q.f[n * ldq + h * p.D];
      const float* gn = &dout.f[n * ldq + h * p.D];
      const float di = dot(gn, &o[n * ldq + h * p.D]);
      for (int64_t j = p.cu[seq]; j <= n; ++j) {
        const float pr = std::exp(dot(qn, &k.f[j * ldk + hk * p.D]) * scale - lse[n * p.H + h]);
        const float ds = pr * (dot(gn, &v.f[j * ldk + hk * p.D]) - di);
        for (int64_t c = 0; c < p.D; ++c) {
          dq[n * ldq + h * p.D + c] += ds * k.f[j * ldk + hk * p.D + c] * scale;
          dk[j * ldk + hk * p.D + c] += ds * qn[c] * scale;
          dv[j * ldk + hk * p.D + c] += pr * gn[c];
        }
      }
    }
  const Tensor dqt = cpu().scratch().alloc_f32({p.N, ldq}),
               dkt = cpu().scratch().alloc_f32({p.N, ldk}),
               dvt = cpu().scratch().alloc_f32({p.N, ldk});
  cpu().attention_backward(dqt, dkt, dvt, to_device(cpu(), dout), qt, kt, vt, ot, lt, si, sh);
  expect_close(dq, to_host(cpu(), dqt).f, 2e-5, "dq");
  expect_close(dk, to_host(cpu(), dkt).f, 2e-5, "dk");
  expect_close(dv, to_host(cpu(), dvt).f, 2e-5, "dv");
}

TEST(CudaMath, SequenceOfIsTheLastStartNotAfterTheRow) {
  const std::vector<int32_t> cu = {0, 3, 3, 3, 4, 10, 10, 11};
  const int64_t S = static_cast<int64_t>(cu.size()) - 1;
  for (int64_t n = 0; n < cu.back(); ++n) {
    int64_t want = 0;
    for (int64_t s = 0; s < S; ++s)
      if (cu[s] <= n && n < cu[s + 1]) want = s;
    EXPECT_EQ(dmath::sequence_of(cu.data(), S, n), want) << n;
  }
}

// ---------------------------------------------------------------------------- sampling

// sampling.cu's tempered_kernel + (stable descending sort) + pick_kernel for one row
int32_t gpu_pick(const float* z, int64_t V, float temp, float top_p, int64_t top_k, double u,
                 float& logprob, float& entropy) {
  const double inv_t = temp > 0 ? 1.0 / temp : 1.0;
  const float mx = *std::max_element(z, z + V);
  std::vector<double> p(V);
  double S = 0, T = 0;
  for (int64_t j = 0; j < V; ++j) {
    const double w = (double{z[j]} - mx) * inv_t;
    p[j] = std::exp(w);
    S += p[j];
    T += p[j] * w;
  }
  entropy = static_cast<float>(std::max(0.0, std::log(S) - T / S));
  int32_t tok;
  if (temp <= 0) {
    tok = static_cast<int32_t>(std::max_element(z, z + V) - z);
  } else if (top_k <= 0 && top_p >= 1.0f) {
    tok = dmath::pick_in_id_order(p.data(), V, S, u);
  } else {
    std::vector<int32_t> order(V);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return p[a] > p[b]; });
    std::vector<double> sp(V);
    for (int64_t i = 0; i < V; ++i) sp[i] = p[order[i]];
    tok = dmath::pick_sorted(sp.data(), order.data(),
                             dmath::cut_keep(sp.data(), V, S, top_p, top_k), u);
  }
  logprob = static_cast<float>(dmath::tempered_logprob(z[tok], mx, inv_t, std::log(S)));
  return tok;
}

TEST(CudaMath, SamplingPicksTheCpuSamplersToken) {
  const int64_t rows = 64, V = 300;
  Array z = randn({rows, V}, 81, 3.0f);
  for (int64_t j = 0; j < V; j += 50) z.f[5 * V + j] = 9.0f;  // ties at the top of row 5
  std::vector<float> temp(rows);
  std::vector<double> u(rows);
  for (int64_t r = 0; r < rows; ++r) {
    temp[r] = r % 8 == 0 ? 0.0f : 0.3f + 0.05f * static_cast<float>(r);  // greedy rows too
    u[r] = dmath::sampling_uniform(1234, r, r % 3, r);
  }
  u[1] = 0.0;
  u[2] = std::nextafter(1.0, 0.0);  // the ends of [0, 1)
  struct Cut {
    float top_p;
    int64_t top_k;
  };
  for (Cut cut : {Cut{1.0f, 0}, Cut{0.9f, 0}, Cut{1.0f, 20}, Cut{0.5f, 40}, Cut{1e-6f, 0}}) {
    ArenaScope sc(cpu().scratch());
    const Tensor tok = cpu().scratch().alloc(DType::I32, {rows}),
                 lp = cpu().scratch().alloc_f32({rows}), ent = cpu().scratch().alloc_f32({rows});
    cpu().sample(tok, lp, ent, to_device(cpu(), z), V, to_device(cpu(), f32({rows}, temp)),
                 to_device(cpu(), f64({rows}, u)), cut.top_p, cut.top_k);
    const Array th = to_host(cpu(), tok), lh = to_host(cpu(), lp), eh = to_host(cpu(), ent);
    for (int64_t r = 0; r < rows; ++r) {
      float glp, gent;
      const int32_t t = gpu_pick(&z.f[r * V], V, temp[r], cut.top_p, cut.top_k, u[r], glp, gent);
      ASSERT_EQ(t, th.i[r]) << "row " << r << " top_p " << cut.top_p << " top_k " << cut.top_k;
      EXPECT_EQ(glp, lh.f[r]) << r;
      EXPECT_EQ(gent, eh.f[r]) << r;
    }
  }
}

TEST(CudaMath, SamplingUniformsAreCounterBasedAndUniform) {
  // a pure function of (seed, prompt, sample, position): the same on host and device
  EXPECT_EQ(dmath::sampling_uniform(1, 2, 3, 4), dmath::sampling_uniform(1, 2, 3, 4));
  EXPECT_NE(dmath::sampling_uniform(1, 2, 3, 4), dmath::sampling_uniform(1, 2, 3, 5));
  EXPECT_NE(dmath::sampling_uniform(1, 2, 3, 4), dmath::sampling_uniform(1, 3, 2, 4));
  EXPECT_NE(dmath::sampling_uniform(1, 2, 3, 4), dmath::sampling_uniform(2, 2, 3, 4));
  // splitmix64's published first output for state 0 (Vigna's reference implementation)
  EXPECT_EQ(dmath::mix64(0), 0xe220a8397b1dcdafull);
  double sum = 0, sum2 = 0, lo = 1, hi = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double x = dmath::sampling_uniform(42, i / 1000, i % 7, i % 1000);
    ASSERT_GE(x, 0.0);
    ASSERT_LT(x, 1.0);
    sum += x;
    sum2 += x * x;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  EXPECT_NEAR(sum / n, 0.5, 0.005);               // 7 standard errors
  EXPECT_NEAR(sum2 / n - 0.25, 1.0 / 12, 0.002);  // variance of U(0, 1)
  EXPECT_LT(lo, 1e-4);
  EXPECT_GT(hi, 1 - 1e-4);
}

}  // namespace
}  // namespace bupo::test::ops
