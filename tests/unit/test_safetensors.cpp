// safetensors and checkpoint I/O: round trips in F32/BF16/F16, sharded directories, dtype
// conversion edge cases, and malformed files that must give one clear error naming file and field.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "../test_util.hpp"
#include "io/safetensors.hpp"
#include "model_fixture.hpp"

namespace bupo {
namespace {
namespace fs = std::filesystem;

void write_raw(const std::string& path, const std::string& header, const std::string& data,
               int64_t hlen = -1) {
  std::ofstream f(path, std::ios::binary);
  uint64_t n = hlen < 0 ? header.size() : static_cast<uint64_t>(hlen);
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
  f << header << data;
}

// Expects open/load to throw an Error whose message contains every fragment.
template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> fragments) {
  try {
    f();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& fr : fragments)
      EXPECT_NE(msg.find(fr), std::string::npos) << "message: " << msg << "\nmissing: " << fr;
  }
}

TEST(Dtype, Bf16AndF16ConversionEdgeCases) {
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), f32_to_bf16(1.0f));  // tie rounds to even
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_EQ(f16_to_f32(f32_to_f16(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(70000.0f))));
  EXPECT_EQ(f16_to_f32(f32_to_f16(std::ldexp(1.0f, -24))),
            std::ldexp(1.0f, -24));                                       // smallest subnormal
  EXPECT_EQ(f16_to_f32(f32_to_f16(-0.333251953125f)), -0.333251953125f);  // exactly representable
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), f32_to_f16(1.0f));  // tie rounds to even
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  for (float v : {0.1f, -2.5f, 1e-5f, 3e4f})
    EXPECT_NEAR(f16_to_f32(f32_to_f16(v)), v,
                std::max(std::fabs(v) * 1e-3, std::ldexp(1.0, -25)));  // 1e-5 is subnormal
}

TEST(Safetensors, RoundTripInEveryStorageDtype) {
  const std::string dir = test::temp_dir("st");
  auto a = test::randn(12, 1), b = test::randn(5, 2);
  const std::vector<NamedTensor> ts = {{"a", {3, 4}, a.data()}, {"b.weight", {5}, b.data()}};
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    const std::string p = dir + "/x.safetensors";
    save_safetensors(p, ts, dt, {{"format", "pt"}});
    auto f = SafetensorsFile::open(p);
    EXPECT_EQ(f->metadata().at("format"), "pt");
    const TensorInfo* t = f->find("a");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, dt);
    EXPECT_EQ(t->shape, (Shape{3, 4}));
    std::vector<float> got(12);
    f->read_f32(*t, got.data());
    for (int i = 0; i < 12; ++i) {
      const float want = dt == DType::F32    ? a[i]
                         : dt == DType::BF16 ? bf16_to_f32(f32_to_bf16(a[i]))
                                             : f16_to_f32(f32_to_f16(a[i]));
      EXPECT_EQ(got[i], want);
    }
  }
}

TEST(Safetensors, ModelSavesAndLoadsSingleAndShardedCheckpoints) {
  auto m = test::tiny_model(Arch::Llama);
  for (uint64_t shard : {uint64_t{0}, uint64_t{20000}}) {
    const std::string dir = test::temp_dir("ck" + std::to_string(shard));
    m->save(dir, DType::F32, shard);
    EXPECT_EQ(fs::exists(dir + "/model.safetensors.index.json"), shard > 0);
    auto m2 = Model::load(dir, ParallelContext::single());
    EXPECT_EQ(m2->params().weights_to_host(), m->params().weights_to_host());
  }
}

TEST(SafetensorsErrors, TruncatedFileShorterThanTheHeaderLength) {
  const std::string p = test::temp_dir("e") + "/t.safetensors";
  std::ofstream(p, std::ios::binary) << "abc";
  expect_error([&] { SafetensorsFile::open(p); }, {p, "truncated", "at least 8"});
}

TEST(SafetensorsErrors, HeaderLengthBeyondTheFile) {
  const std::string p = test::temp_dir("e") + "/t.safetensors";
  write_raw(p, "{}", "", 1 << 20);
  expect_error([&] { SafetensorsFile::open(p); }, {p, "header length 1048576 exceeds the file"});
}

TEST(SafetensorsErrors, MalformedJsonHeader) {
  const std::string p = test::temp_dir("e") + "/t.safetensors";
  write_raw(p, "{\"a\": {\"dtype\": ", "");
  expect_error([&] { SafetensorsFile::open(p); }, {p, "header: malformed JSON"});
}

TEST(SafetensorsErrors, NumberOutOfRangeInHeader) {  // found by tests/fuzz/run_fuzz.sh
  const std::string p = test::temp_dir("e") + "/t.safetensors";
  write_raw(p, R"({"a": 999999e99999})", "");
  expect_error([&] { SafetensorsFile::open(p); }, {p, "header: invalid JSON"});
}

TEST(SafetensorsErrors, UnknownDtype) {
  const std::string p = test::temp_dir("e") + "/t.safetensors";
  write_raw(p, R"({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}})",
            std::string(16, '\0'));
  expect_error([&] { SafetensorsFile::open(p); },
               {p, "tensor 'w'", "field 'dtype'", "unknown dtype 'F128'"});
}

TEST(SafetensorsErrors, IntegerTensorCannotBeLoadedAsWeights) {
  const std::string p = test::temp_dir("e") + "/t.safetensors";
  write_raw(p, R"({"w": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}})",
            std::string(16, '\0'));
  auto f = SafetensorsFile::open(p);
  std::vector<float> out(2);
  expect_error([&] { f->read_f32(*f->find("w"), out.data()); }, {p, "tensor 'w'", "I64"});
}

TEST(SafetensorsErrors, DataOffsetsOutsideTheFileOrInconsistentWithShape) {
  const std::string p = test::temp_dir("e") + "/t.safetensors";
  write_raw(p, R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
            std::string(8, '\0'));
  expect_error([&] { SafetensorsFile::open(p); },
               {p, "tensor 'w'", "data_offsets", "outside the data section"});
  write_raw(p, R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})",
            std::string(16, '\0'));
  expect_error([&] { SafetensorsFile::open(p); },
               {p, "tensor 'w'", "needs 12 bytes but data_offsets span 16"});
  write_raw(
      p,
      R"({"w": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 16]}})",
      std::string(16, '\0'));
  expect_error([&] { SafetensorsFile::open(p); }, {p, "tensor 'w'", "overflows"});
  write_raw(p, R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})",
            std::string(4, '\0'));
  expect_error([&] { SafetensorsFile::open(p); }, {p, "field 'shape'"});
}

class ModelFileErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir("m");
    test::tiny_model(Arch::Qwen3, /*tied=*/true)->save(dir_, DType::BF16);
  }
  std::string dir_;
};

TEST_F(ModelFileErrors, TensorShapeDisagreesWithConfig) {
  json c = read_json_file(dir_ + "/config.json");
  c["intermediate_size"] = 50;
  std::ofstream(dir_ + "/config.json") << c.dump();
  expect_error([&] { Model::load(dir_, ParallelContext::single()); },
               {"model.safetensors", "model.layers.0.mlp.gate_proj.weight",
                "shape [48, 32] disagrees with config.json", "expected [50, 32]"});
}

TEST_F(ModelFileErrors, MissingTensor) {
  json c = read_json_file(dir_ + "/config.json");
  c["tie_word_embeddings"] = false;  // now lm_head.weight is required but absent
  std::ofstream(dir_ + "/config.json") << c.dump();
  expect_error([&] { Model::load(dir_, ParallelContext::single()); },
               {dir_, "missing tensor 'lm_head.weight'"});
}

TEST_F(ModelFileErrors, TruncatedWeights) {
  const auto p = dir_ + "/model.safetensors";
  fs::resize_file(p, fs::file_size(p) - 100);
  expect_error([&] { Model::load(dir_, ParallelContext::single()); },
               {p, "outside the data section", "truncated"});
}

TEST_F(ModelFileErrors, ShardIndexPointsToMissingOrUnsafeFile) {
  std::ofstream(dir_ + "/model.safetensors.index.json")
      << R"({"weight_map": {"model.norm.weight": "nope.safetensors"}})";
  expect_error([&] { Model::load(dir_, ParallelContext::single()); },
               {"nope.safetensors", "cannot open"});
  std::ofstream(dir_ + "/model.safetensors.index.json")
      << R"({"weight_map": {"model.norm.weight": "../x.safetensors"}})";
  expect_error([&] { Model::load(dir_, ParallelContext::single()); },
               {"model.safetensors.index.json", "plain file name"});
  std::ofstream(dir_ + "/model.safetensors.index.json") << R"({"weight_map": [1, 2]})";
  expect_error([&] { Model::load(dir_, ParallelContext::single()); },
               {"model.safetensors.index.json", "'weight_map'"});
}

TEST_F(ModelFileErrors, MissingConfig) {
  fs::remove(dir_ + "/config.json");
  expect_error([&] { Model::load(dir_, ParallelContext::single()); }, {dir_, "no config.json"});
}

// Issue 13, item 7: headers a corrupt or hostile writer produces.
TEST(SafetensorsErrors, OverlappingDataOffsetsAndDuplicateKeys) {
  const std::string p = test::temp_dir("e") + "/t.safetensors";
  write_raw(p,
            R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
            std::string(16, '\0'));
  expect_error([&] { SafetensorsFile::open(p); }, {p, "tensors 'a'", "'b'", "overlap"});
  write_raw(p,
            R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
            std::string(8, '\0'));
  expect_error([&] { SafetensorsFile::open(p); }, {p, "key 'a' appears twice"});
  write_raw(p, R"({"a": {"dtype": "F32", "dtype": "F16", "shape": [1], "data_offsets": [0, 4]}})",
            std::string(4, '\0'));
  expect_error([&] { SafetensorsFile::open(p); }, {p, "key 'dtype' appears twice"});
  // adjacent and empty tensors are not overlaps
  write_raw(p,
            R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "e": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
            std::string(8, '\0'));
  EXPECT_EQ(SafetensorsFile::open(p)->tensors().size(), 3u);
}

TEST(SafetensorsErrors, ATensorTheConfigDoesNotUseIsAnError) {
  const std::string dir = test::temp_dir("unused");
  auto m = test::tiny_model(Arch::Qwen3, true);  // 4 layers, tied
  const std::vector<float> w = m->params().weights_to_host();
  auto save_with = [&](const std::string& extra, const Shape& shape) {
    std::vector<NamedTensor> ts;
    for (const auto& p : m->params().all()) ts.push_back({p.name, p.shape, w.data() + p.offset});
    std::vector<float> x(static_cast<size_t>(numel_of(shape)), 0.5f);
    if (!extra.empty()) ts.push_back({extra, shape, x.data()});
    fs::remove_all(dir + "/m");
    m->save(dir + "/m", DType::F32);  // config.json
    save_checkpoint_weights(dir + "/m", ts, DType::F32);
  };
  const int64_t d = m->config().hidden_size;
  save_with("model.layers.4.input_layernorm.weight", {d});  // a fifth layer
  expect_error([&] { Model::load(dir + "/m", ParallelContext::single()); },
               {"model.safetensors", "'model.layers.4.input_layernorm.weight'", "layer 5",
                "num_hidden_layers = 4"});
  save_with("lm_head.weight", {m->config().vocab_size, d});  // untied head under tied config
  expect_error([&] { Model::load(dir + "/m", ParallelContext::single()); },
               {"model.safetensors", "'lm_head.weight'", "not used by config.json"});
  save_with("model.layers.0.self_attn.q_proj.bias", {m->config().num_heads * m->config().head_dim});
  expect_error([&] { Model::load(dir + "/m", ParallelContext::single()); },
               {"'model.layers.0.self_attn.q_proj.bias'", "not used", "no q/k/v bias"});
  // the buffer old Llama exports kept is not a weight, and loads
  save_with("model.layers.1.self_attn.rotary_emb.inv_freq", {m->config().head_dim / 2});
  EXPECT_NO_THROW(Model::load(dir + "/m", ParallelContext::single()));
}

}  // namespace
}  // namespace bupo
