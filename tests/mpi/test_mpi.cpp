// Run by ctest under `mpirun --oversubscribe -np {2,3}`. Checks the MPI communicator, the
// vocab-parallel lens (one max + one packed sum all-reduce per chunk) against the unsharded lens,
// and — for 2 ranks — a tensor-parallel (TP=2) model forward and backward against one rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>

#include "../test_util.hpp"
#include "../unit/model_fixture.hpp"
#include "lens/lens.hpp"
#include "optim/adamw.hpp"
#include "parallel/grads.hpp"
#include "parallel/mpi_comm.hpp"
#include "parallel/zero.hpp"

namespace bupo {
namespace {

std::shared_ptr<MpiComm> world() {
  return std::make_shared<MpiComm>(MPI_COMM_WORLD);
}

TEST(MpiComm, Collectives) {
  auto c = world();
  const int r = c->rank(), n = c->size();
  std::vector<float> a = {static_cast<float>(r), 1.0f, static_cast<float>(-r)};
  c->allreduce_sum(a.data(), a.size());
  EXPECT_EQ(a[0], n * (n - 1) / 2.0f);
  EXPECT_EQ(a[1], static_cast<float>(n));
  std::vector<float> m = {static_cast<float>(r), static_cast<float>(-r)};
  c->allreduce_max(m.data(), m.size());
  EXPECT_EQ(m[0], n - 1.0f);
  EXPECT_EQ(m[1], 0.0f);
  std::vector<float> g(2 * n), mine = {static_cast<float>(r), static_cast<float>(10 * r)};
  c->allgather(mine.data(), g.data(), 2);
  for (int i = 0; i < n; ++i) EXPECT_EQ(g[2 * i + 1], 10.0f * i);
  int v = r == 0 ? 42 : 0;
  c->broadcast(&v, sizeof v, 0);
  EXPECT_EQ(v, 42);
  EXPECT_EQ(c->stats().calls(), 4u);
}

TEST(VocabParallelLens, MatchesTheUnshardedLensForwardAndBackward) {
  auto c = world();
  const int r = c->rank(), np = c->size();
  const int64_t V = 60, d = 12, n = 9, Vl = V / np;
  const auto E = test::randn(V * d, 1), x = test::randn(n * d, 2, 2.0f),
             gn = test::randn(d, 3, 0.2f);
  const auto glp = test::randn(n, 4), gent = test::randn(n, 5);
  std::vector<int32_t> tgt(n);
  for (int64_t i = 0; i < n; ++i) tgt[i] = static_cast<int32_t>((i * 17 + 3) % V);

  for (LensMode mode : {LensMode::Raw, LensMode::Normed}) {
    auto setup = [&](ParamStore& ps, int64_t rows, int64_t off) {
      ps.add("E", {rows, d}, {V, d}, 0, off);
      ps.add("norm", {d}, {d});
      ps.finalize();
      ps.allocate_grads();
      std::copy(E.begin() + off * d, E.begin() + (off + rows) * d, ps.at(0).w);
      for (int64_t i = 0; i < d; ++i) ps.at(1).w[i] = 1.0f + gn[i];
    };
    ParamStore full, shard;
    setup(full, V, 0);
    setup(shard, Vl, r * Vl);
    const Lens lf{&full.at(0), &full.at(1), mode, 1e-6f, nullptr, 4};
    const Lens ls{&shard.at(0), &shard.at(1), mode, 1e-6f, c.get(), 4};
    std::vector<float> ef(n), lf_(n), es(n), lps(n), dxf(n * d, 0.0f), dxs(n * d, 0.0f);
    const Tensor xt = Tensor::host(x.data(), {n, d});
    lf.forward(xt, tgt.data(), ef.data(), lf_.data());
    const uint64_t calls0 = c->stats().calls();
    ls.forward(xt, tgt.data(), es.data(), lps.data());
    EXPECT_EQ(c->stats().calls() - calls0, 2u * 3u)
        << "one max + one packed sum per chunk (3 chunks)";
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_NEAR(es[i], ef[i], 1e-5);
      EXPECT_NEAR(lps[i], lf_[i], 1e-5);
    }
    lf.backward(xt, tgt.data(), glp.data(), gent.data(), Tensor::host(dxf.data(), {n, d}));
    ls.backward(xt, tgt.data(), glp.data(), gent.data(), Tensor::host(dxs.data(), {n, d}));
    EXPECT_LE(test::rel_err(dxs.data(), dxf.data(), n * d), 1e-5);
    EXPECT_LE(test::rel_err(shard.at(0).g, full.at(0).g + r * Vl * d, Vl * d), 1e-5);
    if (mode == LensMode::Normed) {
      EXPECT_LE(test::rel_err(shard.at(1).g, full.at(1).g, d), 1e-5);
    }
  }
}

TEST(TensorParallelModel, ForwardAndBackwardMatchOneRank) {
  auto c = world();
  if (c->size() != 2)
    GTEST_SKIP() << "the tiny model's 4 heads / 2 KV heads split over exactly 2 ranks";
  for (Arch arch : {Arch::Llama, Arch::Qwen2, Arch::Qwen3}) {
    auto single = test::tiny_model(arch, arch == Arch::Qwen3);
    ParallelContext pc = ParallelContext::single();
    pc.tp = c;
    Model tp(test::tiny_config(arch, arch == Arch::Qwen3), pc);
    tp.init_random(7, 0.2f);  // same seed as tiny_model: layout-independent initialisation
    const Batch b = test::tiny_batch();
    Activations a1, a2;
    single->forward(b, a1, true);
    const CommCount ar0 = c->stats()[CommOp::AllReduce];
    tp.forward(b, a2, true);
    // Megatron's count: one all-reduce of N·d activations after the vocab-parallel embedding and
    // after each row-parallel layer (o_proj, down_proj): (1 + 2L) per forward, nothing else
    const int64_t L = tp.num_layers(), Nd = b.N() * tp.hidden();
    EXPECT_EQ(c->stats()[CommOp::AllReduce].calls - ar0.calls, static_cast<uint64_t>(1 + 2 * L));
    EXPECT_EQ(c->stats()[CommOp::AllReduce].bytes - ar0.bytes,
              static_cast<uint64_t>((1 + 2 * L) * Nd * 4));
    EXPECT_LE(test::rel_err(a2.final_out.f32(), a1.final_out.f32(), a1.final_out.numel()), 1e-5)
        << arch_name(arch);

    // backward of the output-policy log-prob; the lens is vocab-parallel over the same group
    single->params().allocate_grads();
    tp.params().allocate_grads();
    const int64_t N = b.N(), d = single->hidden();
    std::vector<int32_t> tgt(b.ids.begin(), b.ids.end());
    std::vector<float> g(N, -0.1f), dy1(N * d, 0.0f), dy2(N * d, 0.0f);
    const Tensor dy1t = Tensor::host(dy1.data(), {N, d}), dy2t = Tensor::host(dy2.data(), {N, d});
    Lens{&single->unembedding(), nullptr, LensMode::Raw}.backward(a1.final_out, tgt.data(),
                                                                  g.data(), nullptr, dy1t);
    Lens{&tp.unembedding(), nullptr, LensMode::Raw, 1e-6f, c.get()}.backward(
        a2.final_out, tgt.data(), g.data(), nullptr, dy2t);
    EXPECT_LE(test::rel_err(dy2.data(), dy1.data(), N * d), 1e-5);
    single->backward_from_output(b, a1, dy1t);
    const CommCount ab0 = c->stats()[CommOp::AllReduce];
    tp.backward_from_output(b, a2, dy2t);
    // backward: the conjugate all-reduces of the column-parallel inputs (QKV, gate/up): 2L
    EXPECT_EQ(c->stats()[CommOp::AllReduce].calls - ab0.calls, static_cast<uint64_t>(2 * L));
    EXPECT_EQ(c->stats()[CommOp::AllReduce].bytes - ab0.bytes,
              static_cast<uint64_t>(2 * L * Nd * 4));
    for (auto& p : tp.params().all()) {
      const Param* q = single->params().find(p.name);
      ASSERT_NE(q, nullptr);
      std::vector<float> want(p.numel()), got(p.g, p.g + p.numel());
      if (p.name.find("q_norm") != std::string::npos || p.name.find("k_norm") != std::string::npos)
        c->allreduce_sum(got.data(), got.size());  // replicated over TP, partial per rank
      const int64_t rows = p.shape[0], cols = p.shape.size() == 2 ? p.shape[1] : 1;
      const int64_t fcols = p.full_shape.size() == 2 ? p.full_shape[1] : 1;
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) {
          const int64_t gi = (p.shard_dim == 0 ? i + p.shard_offset : i),
                        gj = (p.shard_dim == 1 ? j + p.shard_offset : j);
          want[i * cols + j] = q->g[gi * fcols + gj];
        }
      EXPECT_LE(test::rel_err(got.data(), want.data(), p.numel(), 1e-8), 1e-4)
          << arch_name(arch) << " " << p.name;
    }
  }
}

// ZeRO-1 against the replicated optimizer on the same gradients: the DP group is the world; the
// parameters straddle small buckets; one parameter is trained on rank 0 only (the replicas agree
// on it) and one by no rank (skipped everywhere, decay included).
TEST(ZeroOptimizer, MatchesReplicatedAdamWAndKeepsConsolidatedMoments) {
  auto c = world();
  const int r = c->rank(), n = c->size();
  auto make = [](ParamStore& ps) {
    ps.add("a", {37}, {37});
    ps.add("b", {5, 7}, {5, 7});
    ps.add("frozen", {9}, {9});
    ps.add("rank0_only", {3}, {3});
    ps.add("c", {100}, {100});
    ps.finalize();
    ps.allocate_grads();
    for (auto& p : ps.all())
      for (int64_t i = 0; i < p.numel(); ++i) p.w[i] = 0.01f * static_cast<float>(i % 13) - 0.05f;
  };
  ParamStore rep, zps;
  make(rep);
  make(zps);
  const AdamWConfig cfg{1e-2, 0.9, 0.999, 1e-8, 0.1};
  AdamW opt_rep(rep, cfg);
  const int64_t total = static_cast<int64_t>(zps.total_elements());
  ZeroLayout lay(total, n, r, /*bucket_elems=*/40);
  const uint64_t before = zps.backend().counters(MemRole::OptState).bytes_live;
  AdamW opt_zero(zps, cfg, ZeroShard{lay, c, c});
  // measured: the backend's optimizer-state block holds m and v of the shard only
  EXPECT_EQ(zps.backend().counters(MemRole::OptState).bytes_live - before,
            2 * static_cast<uint64_t>(lay.shard_elements()) * 4);
  // this rank's optimizer state: its parts of the buckets, about 1/n of the arena
  EXPECT_EQ(opt_zero.state_elements(), lay.shard_elements());
  EXPECT_LE(lay.shard_elements(), total / n + 16 * static_cast<int64_t>(lay.buckets().size()));
  for (int t = 1; t <= 3; ++t) {
    for (ParamStore* ps : {&rep, &zps}) {
      ps->zero_grad();
      for (auto& p : ps->all()) {
        if (p.name == "frozen" || (p.name == "rank0_only" && r != 0)) continue;
        for (int64_t i = 0; i < p.numel(); ++i)
          p.g[i] = 0.1f * static_cast<float>((i * (r + 2) + t) % 7) + 0.05f;  // sums far from 0
        p.has_grad = true;
      }
    }
    allreduce_grads(rep, *c, *c, /*bucket_mb=*/1e-4);
    const double norm_rep = grad_norm(rep);
    reduce_scatter_grads(zps, lay, *c, *c);
    double s = owned_grad_sumsq(zps, lay);
    c->allreduce_sum(&s, 1);
    EXPECT_NEAR(std::sqrt(s), norm_rep, 1e-9 * norm_rep) << "step " << t;
    opt_rep.step();
    opt_zero.step();
    for (const auto& p : rep.all()) {
      const Param* q = zps.find(p.name);
      for (int64_t i = 0; i < p.numel(); ++i)
        ASSERT_NEAR(q->w[i], p.w[i], 1e-7f) << p.name << "[" << i << "] step " << t;
    }
  }
  EXPECT_EQ(opt_zero.step_counts(), opt_rep.step_counts());
  EXPECT_EQ(opt_zero.step_count(2), 0);  // frozen
  for (int64_t i = 0; i < 9; ++i)
    EXPECT_EQ(zps.find("frozen")->w[i], 0.01f * static_cast<float>(i % 13) - 0.05f);
  // the moments in the consolidated layout (what a checkpoint holds), and back
  const std::vector<float> m = opt_zero.exp_avg_to_host(), v = opt_zero.exp_avg_sq_to_host();
  const std::vector<float> m_rep = opt_rep.exp_avg_to_host(), v_rep = opt_rep.exp_avg_sq_to_host();
  ASSERT_EQ(m.size(), m_rep.size());
  for (size_t i = 0; i < m.size(); ++i) {
    ASSERT_NEAR(m[i], m_rep[i], 1e-7f) << i;
    ASSERT_NEAR(v[i], v_rep[i], 1e-8f) << i;
  }
  ParamStore again;
  make(again);
  AdamW restored(again, cfg, ZeroShard{lay, c, c});
  restored.moments_from_host(m, v);
  EXPECT_EQ(restored.exp_avg_to_host(), m);
  EXPECT_EQ(restored.exp_avg_sq_to_host(), v);
}

}  // namespace
}  // namespace bupo
