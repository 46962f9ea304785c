// Model invariants of papers.md §4 (items 1–6) on tiny random decoders.
#include <gtest/gtest.h>

#include <cmath>

#include "../test_util.hpp"
#include "lens/lens.hpp"
#include "model_fixture.hpp"
#include "optim/adamw.hpp"

namespace bupo {
namespace {

struct Captured {
  std::vector<std::vector<float>> h, attn_out, ffn_out, attn_in, ffn_in;
};
Captured capture(Model& m, const Batch& b, Activations& acts) {
  Captured c;
  const int64_t n = b.N() * m.hidden();
  const TapFn tap = [&](const LayerTaps& t) {
    c.h.emplace_back(t.h_out.f32(), t.h_out.f32() + n);
    if (t.layer == 0) return;
    c.attn_in.emplace_back(t.attn_in.f32(), t.attn_in.f32() + n);
    c.attn_out.emplace_back(t.attn_out.f32(), t.attn_out.f32() + n);
    c.ffn_in.emplace_back(t.ffn_in.f32(), t.ffn_in.f32() + n);
    c.ffn_out.emplace_back(t.ffn_out.f32(), t.ffn_out.f32() + n);
  };
  m.forward(b, acts, true, -1, &tap);
  return c;
}

TEST(ModelInvariants, ResidualStreamIsTheSumOfModuleWrites) {  // §4.1
  auto m = test::tiny_model();
  const Batch b = test::tiny_batch();
  Activations acts;
  const Captured c = capture(*m, b, acts);
  const int L = m->num_layers();
  for (size_t i = 0; i < c.h[0].size(); ++i) {
    double acc = c.h[0][i];
    for (int l = 1; l <= L; ++l) {
      EXPECT_NEAR(c.h[l][i], c.h[l - 1][i] + c.attn_out[l - 1][i] + c.ffn_out[l - 1][i], 1e-5);
      acc += static_cast<double>(c.attn_out[l - 1][i]) + c.ffn_out[l - 1][i];
      EXPECT_NEAR(c.h[l][i], acc, 1e-4);
    }
  }
}

TEST(ModelInvariants, NormedLensAtTopIsTheOutputPolicyAndRawIsNot) {  // §4.2
  auto m = test::tiny_model();
  const Batch b = test::tiny_batch();
  Activations acts;
  m->forward(b, acts, false);
  const int64_t N = b.N();
  const int L = m->num_layers();
  std::vector<float> out(N), normed(N), raw(N);
  Lens{&m->unembedding(), nullptr, LensMode::Raw}.forward(acts.final_out, nullptr, out.data(),
                                                          nullptr);
  const float eps = static_cast<float>(m->config().rms_norm_eps);
  Lens{&m->unembedding(), &m->final_norm(), LensMode::Normed, eps}.forward(acts.h(L), nullptr,
                                                                           normed.data(), nullptr);
  Lens{&m->unembedding(), &m->final_norm(), LensMode::Raw, eps}.forward(acts.h(L), nullptr,
                                                                        raw.data(), nullptr);
  double maxdiff = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    EXPECT_EQ(out[n], normed[n]) << "normed lens at H^L must be the output policy bit for bit";
    maxdiff = std::max(maxdiff, std::fabs(static_cast<double>(raw[n]) - out[n]));
  }
  EXPECT_GT(maxdiff, 1e-3) << "the paper's raw lens at H^L must differ from the output policy";
}

TEST(ModelInvariants, PackedSequencesEqualSeparateRuns) {
  auto m = test::tiny_model(Arch::Llama);
  const std::vector<std::vector<int32_t>> seqs = {{1, 5, 9, 33, 2}, {4, 4, 18}, {63, 0}};
  Activations packed;
  m->forward(Batch::from_sequences(seqs), packed, false);
  int64_t row = 0;
  const int64_t d = m->hidden();
  for (const auto& s : seqs) {
    Activations one;
    m->forward(Batch::from_sequences({s}), one, false);
    for (int64_t i = 0; i < static_cast<int64_t>(s.size()) * d; ++i)
      EXPECT_NEAR(packed.final_out.f32()[row * d + i], one.final_out.f32()[i], 1e-5);
    row += static_cast<int64_t>(s.size());
  }
}

// -mean log π^l(next token), its backward from layer l; returns the loss.
double internal_loss_backward(Model& m, const Batch& b, Activations& acts, int l,
                              bool backward = true) {
  const int64_t N = b.N(), d = m.hidden();
  std::vector<int32_t> tgt(N, 0);
  std::vector<float> g(N, 0.0f), lp(N);
  for (size_t s = 0; s + 1 < b.cu_seqlens.size(); ++s)
    for (int64_t n = b.cu_seqlens[s]; n + 1 < b.cu_seqlens[s + 1]; ++n) {
      tgt[n] = b.ids[n + 1];
      g[n] = -1.0f;
    }
  Lens lens{&m.unembedding(), nullptr, LensMode::Raw};
  lens.forward(acts.h(l), tgt.data(), nullptr, lp.data());
  double loss = 0.0;
  for (int64_t n = 0; n < N; ++n) loss += g[n] * lp[n];
  if (backward) {
    std::vector<float> dH(N * d, 0.0f);
    const Tensor dHt = Tensor::host(dH.data(), {N, d});
    lens.backward(acts.h(l), tgt.data(), g.data(), nullptr, dHt);
    m.backward_from_layer(b, acts, l, dHt);
  }
  return loss;
}

TEST(ModelInvariants, ModelGradientMatchesFiniteDifferences) {
  for (Arch arch : {Arch::Llama, Arch::Qwen2, Arch::Qwen3}) {
    auto m = test::tiny_model(arch, arch == Arch::Qwen3);
    m->params().allocate_grads();
    const Batch b = test::tiny_batch();
    Activations acts;
    m->forward(b, acts, true);
    internal_loss_backward(*m, b, acts, 3);
    for (const char* name :
         {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.up_proj.weight",
          "model.layers.2.input_layernorm.weight", "model.embed_tokens.weight"}) {
      Param* p = m->params().find(name);
      ASSERT_NE(p, nullptr);
      for (int64_t i = 0; i < p->numel(); i += std::max<int64_t>(1, p->numel() / 7)) {
        const float w0 = p->w[i], h = 5e-3f;
        Activations a2;
        p->w[i] = w0 + h;
        m->forward(b, a2, true);
        const double lp = internal_loss_backward(*m, b, a2, 3, false);
        p->w[i] = w0 - h;
        m->forward(b, a2, true);
        const double lm = internal_loss_backward(*m, b, a2, 3, false);
        p->w[i] = w0;
        EXPECT_NEAR(p->g[i], (lp - lm) / (2 * h), 3e-3 + 3e-2 * std::fabs(p->g[i]))
            << arch_name(arch) << " " << name << "[" << i << "]";
      }
    }
  }
}

TEST(ModelInvariants, InternalLossLeavesUpperLayersBitIdenticalAfterAnAdamWStep) {  // §4.6, §1.5
  for (bool tied : {false, true}) {
    auto m = test::tiny_model(Arch::Qwen3, tied);
    m->params().allocate_grads();
    const std::vector<float> before = m->params().weights_to_host();
    const Batch b = test::tiny_batch();
    Activations acts;
    m->forward(b, acts, true);
    const int l = 2;
    internal_loss_backward(*m, b, acts, l);
    AdamW opt(m->params(), AdamWConfig{1e-3, 0.9, 0.999, 1e-8, 0.01});
    clip_grad_norm(m->params(), 1.0);
    opt.step();
    for (const auto& p : m->params().all()) {
      const bool upper = p.name == "model.norm.weight" || p.name.starts_with("model.layers.2.") ||
                         p.name.starts_with("model.layers.3.");
      bool same = true;
      for (int64_t i = 0; i < p.numel(); ++i) same = same && p.w[i] == before[p.offset + i];
      if (upper) {
        EXPECT_FALSE(p.has_grad) << p.name;
        EXPECT_TRUE(same) << p.name << " (above layer " << l << ") changed";
      } else {
        EXPECT_TRUE(p.has_grad) << p.name;
        EXPECT_FALSE(same) << p.name << " (layers <= " << l << ", E_u, embedding) did not change";
      }
    }
  }
}

TEST(ModelInvariants, EntropyChangesTelescope) {  // §4.4
  auto m = test::tiny_model();
  const Batch b = test::tiny_batch();
  Activations acts;
  const Captured c = capture(*m, b, acts);
  const int64_t N = b.N();
  Lens lens{&m->unembedding(), nullptr, LensMode::Raw};
  std::vector<std::vector<float>> H;
  for (const auto& h : c.h) {
    H.emplace_back(N);
    lens.forward(Tensor::host(h.data(), {N, m->hidden()}), nullptr, H.back().data(), nullptr);
  }
  for (int64_t n = 0; n < N; ++n) {
    double sum = 0.0;
    for (size_t l = 1; l < H.size(); ++l) sum += static_cast<double>(H[l][n]) - H[l - 1][n];
    EXPECT_NEAR(sum, static_cast<double>(H.back()[n]) - H[0][n], 1e-5);
  }
}

TEST(ModelInvariants, ForwardUptoStopsEarlyWithTheSameLowerLayers) {
  auto m = test::tiny_model();
  const Batch b = test::tiny_batch();
  Activations full, part;
  m->forward(b, full, true);
  m->forward(b, part, true, 2);
  EXPECT_EQ(part.upto, 2);
  for (int64_t i = 0; i < b.N() * m->hidden(); ++i)
    EXPECT_EQ(full.h(2).f32()[i], part.h(2).f32()[i]);
  EXPECT_THROW(m->forward(b, part, true, 9), Error);
}

}  // namespace
}  // namespace bupo
