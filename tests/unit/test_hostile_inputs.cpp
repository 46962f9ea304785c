// Hostile numbers (issue 13, item 7): every out-of-range value in config.json, GGUF metadata,
// a run config, token data or the command line is one error, exit 1, naming the file and field —
// never SIGFPE, SIGSEGV, std::bad_alloc, minutes of work before failing, a wrapped value or a
// 309-digit echo.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "../test_util.hpp"
#include "core/error.hpp"
#include "io/gguf.hpp"
#include "io/token_data.hpp"
#include "model/config.hpp"
#include "model/gguf_import.hpp"
#include "rl/config.hpp"
#include "rl/data.hpp"
#include "tiny_run.hpp"
#include "tokenizer/tokenizer.hpp"

namespace bupo {
namespace {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

json qwen3_config() {
  return json::parse(R"({"architectures": ["Qwen3ForCausalLM"], "vocab_size": 1000,
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "rope_theta": 1000000.0})");
}

TEST(HostileInputs, ConfigJsonSizesAreBoundedBeforeAnythingIsAllocated) {
  struct Case {
    const char* field;
    json value;
    std::string expect;
  };
  for (const Case& c : std::vector<Case>{
           {"vocab_size", 2147483647, "'vocab_size' = 2147483647 is out of range [1, 16777216]"},
           {"head_dim", int64_t{1} << 40, "'head_dim' = 1099511627776 is out of range"},
           {"num_hidden_layers", 1000000,
            "'num_hidden_layers' = 1000000 is out of range [1, 1024]"},
           {"hidden_size", int64_t{1000000000000}, "'hidden_size' = 1000000000000 is out of range"},
           {"intermediate_size", int64_t{1} << 50, "'intermediate_size'"},
           {"max_position_embeddings", -5, "field 'max_position_embeddings': expected an integer"},
           {"num_key_value_heads", 8, "'num_key_value_heads' = 8 is out of range [1, 4]"},
           // an unsigned 2^64-1 is reported as itself, not wrapped to -1
           {"vocab_size", json(uint64_t{18446744073709551615u}), "got 18446744073709551615"},
           {"rope_theta", 0.0, "'rope_theta' = 0 must be a finite number > 0"},
           {"rms_norm_eps", 2.0, "'rms_norm_eps' = 2 must be a finite number in (0, 1)"},
       }) {
    json j = qwen3_config();
    j[c.field] = c.value;
    const std::string e = error_of([&] { ModelConfig::from_json(j, "m/config.json"); });
    EXPECT_NE(e.find("m/config.json"), std::string::npos) << c.field << ": " << e;
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.field << ": " << e;
  }
}

// A minimal GGUF v3 file: llama metadata and one F32 token_embd.weight [V, d].
class GgufBytes {
 public:
  template <typename T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b_.insert(b_.end(), p, p + sizeof v);
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b_.insert(b_.end(), s.begin(), s.end());
  }
  void kv_i32(const std::string& k, int32_t v) {
    str(k);
    put<uint32_t>(5);
    put(v);
    ++kvs_;
  }
  void kv_u32(const std::string& k, uint32_t v) {
    str(k);
    put<uint32_t>(4);
    put(v);
    ++kvs_;
  }
  void kv_f32(const std::string& k, float v) {
    str(k);
    put<uint32_t>(6);
    put(v);
    ++kvs_;
  }
  void kv_str(const std::string& k, const std::string& v) {
    str(k);
    put<uint32_t>(8);
    str(v);
    ++kvs_;
  }
  // The whole file, with one tensor token_embd.weight of ne = {d, V}.
  std::vector<uint8_t> file(uint64_t d, uint64_t V) const {
    GgufBytes out;
    for (char c : std::string("GGUF")) out.put(c);
    out.put<uint32_t>(3);
    out.put<uint64_t>(1);
    out.put<uint64_t>(kvs_);
    out.b_.insert(out.b_.end(), b_.begin(), b_.end());
    out.str("token_embd.weight");
    out.put<uint32_t>(2);
    out.put<uint64_t>(d);
    out.put<uint64_t>(V);
    out.put<uint32_t>(0);  // F32
    out.put<uint64_t>(0);
    while (out.b_.size() % 32) out.b_.push_back(0);
    out.b_.resize(out.b_.size() + d * V * 4, 0);
    return out.b_;
  }

 private:
  std::vector<uint8_t> b_;
  uint64_t kvs_ = 0;
};

std::string gguf_error(const std::string& key, int32_t value, float freq_base = 10000.0f) {
  GgufBytes g;
  g.kv_str("general.architecture", "llama");
  const std::pair<const char*, int32_t> keys[] = {{"llama.embedding_length", 16},
                                                  {"llama.feed_forward_length", 32},
                                                  {"llama.block_count", 2},
                                                  {"llama.attention.head_count", 4},
                                                  {"llama.attention.head_count_kv", 2},
                                                  {"llama.context_length", 128}};
  for (const auto& [k, v] : keys) g.kv_i32(k, k == key ? value : v);
  g.kv_f32("llama.rope.freq_base", freq_base);
  const auto bytes = g.file(16, 10);
  return error_of(
      [&] { config_from_gguf(*GgufFile::parse(bytes.data(), bytes.size(), "h.gguf")); });
}

TEST(HostileInputs, GgufMetadataIsBoundedAndNeverDividesByZero) {
  EXPECT_EQ(gguf_error("", 0), "(no error)");  // the file itself is valid
  struct Case {
    const char* key;
    int32_t value;
    std::string expect;
  };
  for (const Case& c : std::vector<Case>{
           {"llama.attention.head_count_kv", 0, "'llama.attention.head_count_kv' = 0"},  // SIGFPE
           {"llama.attention.head_count_kv", -2, "'llama.attention.head_count_kv' = -2"},
           {"llama.attention.head_count", 0, "'llama.attention.head_count' = 0"},
           {"llama.embedding_length", -64, "'llama.embedding_length' = -64"},
           {"llama.context_length", -5, "'llama.context_length' = -5"},
           {"llama.block_count", 0, "'llama.block_count' = 0 is out of range [1, 1024]"},
           {"llama.block_count", 100000000, "'llama.block_count' = 100000000"},
           {"llama.feed_forward_length", -1, "'llama.feed_forward_length' = -1"},
       }) {
    const std::string e = gguf_error(c.key, c.value);
    EXPECT_NE(e.find("h.gguf"), std::string::npos) << c.key << ": " << e;
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.key << " = " << c.value << ": " << e;
  }
  for (float bad : {INFINITY, NAN, -1.0f}) {
    const std::string e = gguf_error("", 0, bad);
    EXPECT_NE(e.find("'llama.rope.freq_base'"), std::string::npos) << bad << ": " << e;
  }
}

TEST(HostileInputs, RunConfigValuesAreBoundedAndNamed) {
  struct Case {
    std::string set, expect;
  };
  for (const Case& c : std::vector<Case>{
           {"model.init.hidden=1000000000000",
            "key 'model.init.hidden': 1e+12 is out of range [1, 131072]"},
           {"model.init.layers=100000", "key 'model.init.layers'"},
           {"model.init.hidden=1e12", "key 'model.init.hidden': expected an integer"},
           {"parallel.fault_inject=\"die:99999999999@3\"", "key 'parallel.fault_inject'"},
           {"parallel.fault_inject=\"die:1@99999999999999999999\"", "key 'parallel.fault_inject'"},
           {"parallel.fault_inject=\"die:-1@3\"", "key 'parallel.fault_inject'"},
           {"trainer.out_dir=\"\"", "key 'trainer.out_dir' is empty"},
           {"trainer.out_dir=\"a\\u0000b\"", "key 'trainer.out_dir': contains a NUL character"},
           {"model.path=\"m\\u0000\"", "key 'model.path': contains a NUL character"},
       }) {
    const std::string e =
        error_of([&] { rl::parse_train_config(test::kTinyRun, "tiny.toml", {c.set}); });
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.set << ": " << e;
  }
  const auto ok =
      rl::parse_train_config(test::kTinyRun, "tiny.toml", {"parallel.fault_inject=\"hang:1@3\""});
  EXPECT_EQ(rl::parse_fault_injection(ok.parallel.fault_inject)->step, 3);
  // out_dir naming a file: refused before the model is built
  const std::string dir = test::temp_dir("file");
  std::ofstream(dir + "/f") << "x";
  const std::string e = error_of([&] {
    rl::parse_train_config(test::kTinyRun, "tiny.toml", {"trainer.out_dir=\"" + dir + "/f\""});
  });
  EXPECT_NE(e.find("key 'trainer.out_dir': '" + dir + "/f' is a file, not a folder"),
            std::string::npos)
      << e;
}

TEST(HostileInputs, TokenIdsAreNeverWrapped) {
  // an added-token id of 2^32 + 5 was read as 5
  json t = json::parse(rl::builtin_byte_tokenizer_json());
  t["added_tokens"] = json::array({{{"id", uint64_t{4294967301u}}, {"content", "<x>"}}});
  std::string e = error_of([&] { Tokenizer::from_json(t, "tok.json"); });
  EXPECT_NE(e.find("tok.json: added_tokens: field 'id'"), std::string::npos) << e;
  EXPECT_NE(e.find("got 4294967301"), std::string::npos) << e;
  // a token id of 2^64-1 is reported as itself, not as -1
  e = error_of([&] {
    parse_token_record(json::parse(R"({"ids": [1, 18446744073709551615], "response_start": 1})"),
                       "rows.jsonl:3", 100);
  });
  EXPECT_NE(e.find("rows.jsonl:3: field 'ids'[1] = 18446744073709551615 is outside"),
            std::string::npos)
      << e;
}

TEST(HostileInputs, CommandLineNumbersAreCheckedAsWrittenAndEchoedShort) {
  const std::string digits309(309, '9');
  struct Case {
    std::string args, expect;
  };
  for (const Case& c : std::vector<Case>{
           {"--threads 100000 verify", "--threads: out of range: expected an integer in [0, 1024]"},
           {"generate --model x --prompt hi --max-tokens " + digits309,
            "--max-tokens: out of range"},
           {"generate --model x --prompt hi --temperature " + digits309,
            "--temperature: must be a finite number, got '99999999999999999999...' (309 "
            "characters)"},
           {"generate --model x --prompt hi --n 100000000", "--n: out of range"},
           {"generate --model x --prompt hi --n 1e8", "--n: expected an integer"},
           {"init-model --out x --seed 18446744073709551616", "--seed: out of range"},
           {"init-model --out x --seed -1", "--seed: expected an integer"},
           {"init-model --out x --layers " + digits309, "--layers: out of range"},
           {"init-model --out x --hidden 1000000000000", "--hidden: out of range"},
           {"train --stop-after-step -3", "--stop-after-step"},
       }) {
    const auto r = test::run_bupo(c.args);
    EXPECT_EQ(r.code, 1) << c.args << ": " << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << ": " << r.output;
    EXPECT_LT(r.output.size(), 300u) << c.args << ": " << r.output;  // no 309-digit echo
  }
}

}  // namespace
}  // namespace bupo
