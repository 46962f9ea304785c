// Reference tests: our CPU model against Hugging Face transformers (PyTorch, fp32) on tiny random
// Llama / Qwen2 / Qwen3 checkpoints written by tests/reference/make_golden.py. Tolerance: 1e-4 of
// the largest magnitude of each reference tensor.
#include <gtest/gtest.h>

#include <filesystem>

#include "../test_util.hpp"
#include "io/json_util.hpp"
#include "io/safetensors.hpp"
#include "lens/lens.hpp"
#include "model/model.hpp"

namespace bupo {
namespace {
constexpr double kTol = 1e-4;

class Reference : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = std::string(BUPO_GOLDEN_DIR) + "/" + GetParam();
    model_ = Model::load(dir_, ParallelContext::single());
    golden_ = CheckpointReader::open(dir_ + "/golden.safetensors");
    const json in = read_json_file(dir_ + "/inputs.json");
    seqs_ = in.at("seqs").get<std::vector<std::vector<int32_t>>>();
    internal_layer_ = in.at("internal_layer").get<int>();
    batch_ = Batch::from_sequences(seqs_);
  }
  std::vector<float> ref(const std::string& name) const {
    const auto& t = golden_.info(name);
    std::vector<float> v(static_cast<size_t>(numel_of(t.shape)));
    golden_.file_of(name).read_f32(t, v.data());
    return v;
  }
  void expect_close(const std::vector<float>& got, const std::string& name) const {
    const auto r = ref(name);
    ASSERT_EQ(got.size(), r.size()) << name;
    const double e = test::rel_err(got.data(), r.data(), static_cast<int64_t>(r.size()));
    EXPECT_LE(e, kTol) << GetParam() << ": " << name << " relative error " << e;
  }
  // -mean over predicted positions of log π(x_{t+1}): dL/dlogp per row (0 at each sequence's end)
  void next_token_targets(std::vector<int32_t>& tgt, std::vector<float>& g) const {
    const int64_t N = batch_.N();
    tgt.assign(static_cast<size_t>(N), 0);
    g.assign(static_cast<size_t>(N), 0.0f);
    int64_t ntok = 0;
    for (const auto& s : seqs_) ntok += static_cast<int64_t>(s.size()) - 1;
    for (size_t s = 0; s + 1 < batch_.cu_seqlens.size(); ++s)
      for (int64_t n = batch_.cu_seqlens[s]; n + 1 < batch_.cu_seqlens[s + 1]; ++n) {
        tgt[static_cast<size_t>(n)] = batch_.ids[static_cast<size_t>(n + 1)];
        g[static_cast<size_t>(n)] = -1.0f / static_cast<float>(ntok);
      }
  }
  void expect_grads(const std::string& prefix) {
    int checked = 0;
    for (const auto& p : model_->params().all()) {
      const std::string gname = prefix + "." + p.name;
      if (golden_.contains(gname)) {
        ASSERT_TRUE(p.has_grad) << p.name << " should have received a gradient";
        expect_close(std::vector<float>(p.g, p.g + p.numel()), gname);
        ++checked;
      } else {
        EXPECT_FALSE(p.has_grad) << p.name << " received a gradient PyTorch does not give it";
        for (int64_t i = 0; i < p.numel(); ++i) ASSERT_EQ(p.g[i], 0.0f) << p.name;
      }
    }
    EXPECT_GT(checked, 5);
  }

  void check_logprob_gradient(bool internal);

  std::string dir_;
  std::unique_ptr<Model> model_;
  CheckpointReader golden_;
  std::vector<std::vector<int32_t>> seqs_;
  int internal_layer_ = 1;
  Batch batch_;
};

TEST_P(Reference, OutputLogits) {
  Activations acts;
  model_->forward(batch_, acts, false);
  const int64_t N = batch_.N(), V = model_->config().vocab_size;
  std::vector<float> logits(static_cast<size_t>(N * V));
  Lens out{&model_->unembedding(), nullptr, LensMode::Raw};
  out.logits(acts.final_out, Tensor::host(logits.data(), {N, V}));
  expect_close(logits, "logits");
}

TEST_P(Reference, LensEntropiesOfEveryLayerAndModule) {
  const int L = model_->num_layers();
  const int64_t N = batch_.N();
  for (LensMode mode : {LensMode::Raw, LensMode::Normed}) {
    Lens lens{&model_->unembedding(),
              &model_->final_norm(),
              mode,
              static_cast<float>(model_->config().rms_norm_eps),
              nullptr,
              3 /* several chunks */};
    std::vector<float> layer(static_cast<size_t>(N * (L + 1))), mods[4],
        tmp(static_cast<size_t>(N));
    for (auto& m : mods) m.assign(static_cast<size_t>(N * L), 0.0f);
    auto put = [&](std::vector<float>& dst, const Tensor& x, int col, int cols) {
      lens.forward(x, nullptr, tmp.data(), nullptr);
      for (int64_t n = 0; n < N; ++n)
        dst[static_cast<size_t>(n * cols + col)] = tmp[static_cast<size_t>(n)];
    };
    const TapFn tap = [&](const LayerTaps& t) {
      put(layer, t.h_out, t.layer, L + 1);
      if (t.layer == 0) return;
      put(mods[0], t.attn_in, t.layer - 1, L);
      put(mods[1], t.attn_out, t.layer - 1, L);
      put(mods[2], t.ffn_in, t.layer - 1, L);
      put(mods[3], t.ffn_out, t.layer - 1, L);
    };
    Activations acts;
    model_->forward(batch_, acts, false, -1, &tap);
    const std::string suffix = mode == LensMode::Raw ? "_raw" : "_normed";
    expect_close(layer, "layer" + suffix);
    expect_close(mods[0], "attn_in" + suffix);
    expect_close(mods[1], "attn_out" + suffix);
    expect_close(mods[2], "ffn_in" + suffix);
    expect_close(mods[3], "ffn_out" + suffix);
  }
}

// Gradient of -mean_t log π(x_{t+1}) w.r.t. every parameter, where π is the internal policy π^l
// (raw lens on H^l, golden prefix grad_int) or the output policy (golden prefix grad_out).
void Reference::check_logprob_gradient(bool internal) {
  model_->params().allocate_grads();
  Activations acts;
  model_->forward(batch_, acts, true);
  std::vector<int32_t> tgt;
  std::vector<float> g;
  next_token_targets(tgt, g);
  const int64_t N = batch_.N(), d = model_->hidden();
  const Tensor x = internal ? acts.h(internal_layer_) : acts.final_out;
  Lens lens{&model_->unembedding(), nullptr, LensMode::Raw, 1e-6f, nullptr, internal ? 4 : 5};
  std::vector<float> lp(static_cast<size_t>(N));
  lens.forward(x, tgt.data(), nullptr, lp.data());
  for (size_t n = 0; n < lp.size(); ++n)
    if (g[n] == 0.0f) lp[n] = 0.0f;  // the golden file pads sequence ends with 0
  expect_close(lp, internal ? "lp_int" : "lp_out");
  std::vector<float> dx(static_cast<size_t>(N * d), 0.0f);
  const Tensor dxt = Tensor::host(dx.data(), {N, d});
  lens.backward(x, tgt.data(), g.data(), nullptr, dxt);
  if (internal)
    model_->backward_from_layer(batch_, acts, internal_layer_, dxt);
  else
    model_->backward_from_output(batch_, acts, dxt);
  expect_grads(internal ? "grad_int" : "grad_out");
}

TEST_P(Reference, InternalPolicyLogProbGradientOfEveryParameter) {
  check_logprob_gradient(true);
}
TEST_P(Reference, OutputPolicyLogProbGradientOfEveryParameter) {
  check_logprob_gradient(false);
}

INSTANTIATE_TEST_SUITE_P(HuggingFace, Reference, ::testing::Values("llama", "qwen2", "qwen3"),
                         [](const auto& p) { return p.param; });

}  // namespace
}  // namespace bupo
