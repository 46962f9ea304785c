// The bundled real model, SmolLM2-135M-Instruct (Q4_1 GGUF fetched by env/setup.sh into models/),
// against Hugging Face transformers loading the same GGUF (tests/reference/make_smollm2_golden.py):
// tokenizer ids, logits at the last prompt position, and greedy continuations.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <cmath>

#include <filesystem>
#include <fstream>

#include "../test_util.hpp"
#include "io/h5.hpp"

#include "gen/generate.hpp"
#include "io/json_util.hpp"
#include "lens/lens.hpp"
#include "model/gguf_import.hpp"
#include "tokenizer/tokenizer.hpp"

namespace bupo {
namespace {

const std::string kGguf = std::string(BUPO_MODELS_DIR) + "/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

class SmolLM2 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(kGguf)) return;
    ref_ = new json(read_json_file(std::string(BUPO_GOLDEN_DIR) + "/smollm2_reference.json"));
    tok_ = new Tokenizer(load_tokenizer(kGguf));
    model_ = load_model(kGguf, ParallelContext::single()).release();
  }
  static void TearDownTestSuite() {
    delete ref_;
    delete tok_;
    delete model_;
  }
  void SetUp() override {
    if (!std::filesystem::exists(kGguf)) GTEST_SKIP() << kGguf << " not found: run env/setup.sh";
  }
  static json* ref_;
  static Tokenizer* tok_;
  static Model* model_;
};
json* SmolLM2::ref_ = nullptr;
Tokenizer* SmolLM2::tok_ = nullptr;
Model* SmolLM2::model_ = nullptr;

TEST_F(SmolLM2, TokenizerMatchesHuggingFaceOnTheSameGguf) {
  int n = 0;
  for (const auto& r : (*ref_)["tokenize"]) {
    EXPECT_EQ(tok_->encode(r["text"].get<std::string>()), r["ids"].get<std::vector<int32_t>>())
        << r["text"];
    ++n;
  }
  EXPECT_GE(n, 40);
}

TEST_F(SmolLM2, LastPositionLogitsMatchTransformers) {
  for (const auto& r : (*ref_)["logits"]) {
    const auto ids = r["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok_->encode(r["text"].get<std::string>()), ids);
    const Batch b = Batch::from_sequences({ids});
    Activations acts;
    model_->forward(b, acts, false);
    const int64_t V = model_->config().vocab_size, d = model_->hidden();
    std::vector<float> z(static_cast<size_t>(V));
    Lens out{&model_->unembedding(), nullptr, LensMode::Raw};
    const Tensor last = acts.final_out.rows(b.N() - 1, 1);
    out.logits(last, Tensor::host(z.data(), {1, V}));
    (void)d;
    const auto top_ids = r["top_ids"].get<std::vector<int32_t>>();
    const auto top = r["top_logits"].get<std::vector<double>>();
    const double scale = std::fabs(top[0]);
    for (size_t i = 0; i < top_ids.size(); ++i)
      EXPECT_NEAR(z[static_cast<size_t>(top_ids[i])], top[i], 1e-4 * scale) << "rank " << i;
    EXPECT_EQ(std::max_element(z.begin(), z.end()) - z.begin(), top_ids[0]);
    float ent = 0, lp = 0;
    const int32_t tgt = top_ids[0];
    out.forward(last, &tgt, &ent, &lp);
    EXPECT_NEAR(ent, r["entropy"].get<double>(), 1e-3);
    EXPECT_NEAR(lp, top[0] - r["logsumexp"].get<double>(), 1e-3);
  }
}

std::pair<int, std::string> run_bupo(const std::string& args) {
  const test::RunResult r = test::run_bupo(args);
  return {r.code, r.output};
}

TEST_F(SmolLM2, ConvertWritesACheckpointWithTheSameWeightsAndTokenizer) {
  const std::string dir = test::temp_dir("smolhf");
  const auto [code, out] = run_bupo("convert --gguf " + kGguf + " --out " + dir);
  ASSERT_EQ(code, 0) << out;
  auto m = Model::load(dir, ParallelContext::single());
  EXPECT_EQ(m->params().weights_to_host(), model_->params().weights_to_host());
  const Tokenizer t = load_tokenizer(dir);
  for (const auto& r : (*ref_)["tokenize"])
    EXPECT_EQ(t.encode(r["text"].get<std::string>()), r["ids"].get<std::vector<int32_t>>());
  std::filesystem::remove_all(dir);
}

TEST_F(SmolLM2, GenerateAndTextRowEntropyThroughTheCli) {
  const std::string dir = test::temp_dir("cli");
  const std::string data = dir + "/rows.jsonl";
  std::ofstream(data)
      << R"({"prompt": [{"role": "user", "content": "What is 2+3?"}], "response": "The answer is 5."})"
      << "\n"
      << R"({"prompt": "Name a prime number."})"
      << "\n";
  auto [code, out] =
      run_bupo("generate --model " + kGguf + " --data " + data + " --n 2 --max-tokens 6 --seed 4");
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 4) << out;
  EXPECT_NE(out.find("\"finish_reason\":\"length\""), std::string::npos) << out;
  // the second row has no response: without --generate it is an error naming the line and field
  std::tie(code, out) =
      run_bupo("entropy --model " + kGguf + " --data " + data + " --out " + dir + "/a.h5");
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("rows.jsonl:2: field 'response' is missing"), std::string::npos) << out;
  std::tie(code, out) = run_bupo("entropy --model " + kGguf + " --data " + data + " --out " + dir +
                                 "/b.h5 --generate --max-tokens 5 --template chatml");
  ASSERT_EQ(code, 0) << out;
  auto f = h5::File::open_read(dir + "/b.h5");
  const auto rec = h5::read_i64(f.id(), "/tokens/record");
  const int64_t resp0 = std::count(rec.begin(), rec.end(), 0),
                resp1 = std::count(rec.begin(), rec.end(), 1);
  EXPECT_EQ(resp0, static_cast<int64_t>(tok_->encode("The answer is 5.").size()));
  EXPECT_GE(resp1, 1);
  EXPECT_LE(resp1, 5);
  EXPECT_EQ(h5::dataset_shape(f.id(), "/entropy/layer"), (std::vector<int64_t>{resp0 + resp1, 31}));
  std::filesystem::remove_all(dir);
}

TEST_F(SmolLM2, GreedyDecodingOf64TokensMatchesTransformersOnTenPrompts) {
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> want;
  for (const auto& r : (*ref_)["greedy"]) {
    prompts.push_back(r["ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(tok_->encode(r["text"].get<std::string>()), prompts.back());
    want.push_back(r["greedy"].get<std::vector<int32_t>>());
  }
  ASSERT_EQ(prompts.size(), 10u);
  GenerateOptions o;
  o.temperature = 0.0f;
  o.max_new_tokens = 64;
  o.stop_ids = {2};  // <|im_end|>, the GGUF's eos
  const auto got = generate(*model_, prompts, 1, o, tok_);
  int exact = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(got[i].ids, want[i]) << "prompt " << i << ": " << got[i].text;
    exact += got[i].ids == want[i];
  }
  EXPECT_EQ(exact, 10);
}

}  // namespace
}  // namespace bupo
