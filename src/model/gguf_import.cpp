#include "model/gguf_import.hpp"

#include <filesystem>
#include <fstream>

#include "core/error.hpp"
#include "tokenizer/tokenizer.hpp"

namespace bupo {
namespace {
constexpr const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
}  // namespace

ModelConfig model_config_of(const std::string& path) {
  if (is_gguf_path(path)) return config_from_gguf(*GgufFile::open(path));
  const std::filesystem::path cfg = std::filesystem::path(path) / "config.json";
  BUPO_CHECK(std::filesystem::exists(cfg), path,
             ": no config.json (expected a Hugging Face model directory or a .gguf file)");
  return ModelConfig::load(cfg.string());
}

bool is_gguf_path(const std::string& path) {
  return path.size() > 5 && path.substr(path.size() - 5) == ".gguf" &&
         std::filesystem::is_regular_file(path);
}

ModelConfig config_from_gguf(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  BUPO_CHECK(arch == "llama", f.path(), ": metadata 'general.architecture' = '", arch,
             "' is not supported (expected 'llama')");
  ModelConfig c;
  c.arch = Arch::Llama;
  c.hidden_size = f.get_int("llama.embedding_length");
  c.intermediate_size = f.get_int("llama.feed_forward_length");
  c.num_layers = f.get_int("llama.block_count");
  c.num_heads = f.get_int("llama.attention.head_count");
  c.num_kv_heads = f.get_int_or("llama.attention.head_count_kv", c.num_heads);
  BUPO_CHECK(c.num_heads >= 1 && c.num_heads <= ModelLimits::heads, f.path(),
             ": metadata 'llama.attention.head_count' = ", c.num_heads, " is out of range [1, ",
             ModelLimits::heads, "]");
  BUPO_CHECK(f.has("llama.attention.key_length") || c.hidden_size % c.num_heads == 0, f.path(),
             ": metadata 'llama.attention.head_count' must divide 'llama.embedding_length'");
  c.head_dim = f.get_int_or("llama.attention.key_length", c.hidden_size / c.num_heads);
  c.max_position_embeddings = f.get_int_or("llama.context_length", 4096);
  c.rms_norm_eps = f.get_float_or("llama.attention.layer_norm_rms_epsilon", 1e-5);
  c.rope_theta = f.get_float_or("llama.rope.freq_base", 10000.0);
  const std::string scaling = f.get_string_or("llama.rope.scaling.type", "none");
  BUPO_CHECK(
      scaling == "none" && f.find_tensor("rope_freqs.weight") == nullptr, f.path(),
      ": RoPE scaling in GGUF (llama.rope.scaling.type / rope_freqs.weight) is not supported yet");
  const GgufTensorInfo* emb = f.find_tensor("token_embd.weight");
  BUPO_CHECK(emb != nullptr, f.path(), ": tensor 'token_embd.weight' is missing");
  c.vocab_size = static_cast<int64_t>(emb->ne.size() == 2 ? emb->ne[1] : 0);
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  c.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.validate(f.path(), kGgufConfigNames);
  return c;
}

void unpermute_qk_rows(float* w, int64_t heads, int64_t D, int64_t cols) {
  std::vector<float> tmp(static_cast<size_t>(D * cols));
  for (int64_t h = 0; h < heads; ++h) {
    float* head = w + h * D * cols;
    for (int64_t i = 0; i < D / 2; ++i)
      for (int64_t j = 0; j < 2; ++j)
        std::copy_n(head + (2 * i + j) * cols, cols, tmp.data() + (j * (D / 2) + i) * cols);
    std::copy(tmp.begin(), tmp.end(), head);
  }
}

void load_gguf_weights(Model& m, const GgufFile& f) {
  BUPO_CHECK(m.parallel().tp_size() == 1 && m.parallel().pp_size() == 1,
             "GGUF import: tensor and pipeline parallelism need a converted checkpoint "
             "(bupo convert model.gguf DIR, then model.path = DIR)");
  const ModelConfig& c = m.config();
  auto gguf_name = [](const std::string& hf) -> std::string {
    if (hf == "model.embed_tokens.weight") return "token_embd.weight";
    if (hf == "model.norm.weight") return "output_norm.weight";
    if (hf == "lm_head.weight") return "output.weight";
    const std::string pre = "model.layers.";
    const size_t dot = hf.find('.', pre.size());
    const std::string layer = hf.substr(pre.size(), dot - pre.size()), rest = hf.substr(dot + 1);
    static const std::pair<const char*, const char*> map[] = {
        {"input_layernorm.weight", "attn_norm.weight"},
        {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},
        {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"},
        {"self_attn.q_proj.bias", "attn_q.bias"},
        {"self_attn.k_proj.bias", "attn_k.bias"},
        {"self_attn.v_proj.bias", "attn_v.bias"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},
        {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"}};
    for (const auto& [a, b] : map)
      if (rest == a) return "blk." + layer + "." + b;
    return "";
  };
  std::vector<float> host;
  for (auto& p : m.params().all()) {
    const std::string g = gguf_name(p.name);
    const GgufTensorInfo* t = g.empty() ? nullptr : f.find_tensor(g);
    BUPO_CHECK(t != nullptr, f.path(), ": tensor '", g, "' (for ", p.name, ") is missing");
    BUPO_CHECK(t->torch_shape() == p.full_shape, f.path(), ": tensor '", g, "': shape ",
               shape_str(t->torch_shape()), " disagrees with the metadata (expected ",
               shape_str(p.full_shape), ")");
    host.resize(static_cast<size_t>(p.numel()));
    float* w = host.data();
    f.dequantize(*t, w);
    require_finite_weights(f.path(), g, w, host.size());
    if (p.name.ends_with("q_proj.weight"))
      unpermute_qk_rows(w, c.num_heads, c.head_dim, c.hidden_size);
    if (p.name.ends_with("k_proj.weight"))
      unpermute_qk_rows(w, c.num_kv_heads, c.head_dim, c.hidden_size);
    if (p.name.ends_with("q_proj.bias")) unpermute_qk_rows(w, c.num_heads, c.head_dim, 1);
    if (p.name.ends_with("k_proj.bias")) unpermute_qk_rows(w, c.num_kv_heads, c.head_dim, 1);
    m.backend().upload(p.weight(), w);
  }
  m.params().refresh_working_copy();
}

json tokenizer_json_from_gguf(const GgufFile& f) {
  const std::string model = f.get_string("tokenizer.ggml.model");
  BUPO_CHECK(model == "gpt2", f.path(), ": metadata 'tokenizer.ggml.model' = '", model,
             "' is not supported (expected 'gpt2', byte-level BPE)");
  const auto& tokens = f.get_strings("tokenizer.ggml.tokens");
  const auto& merges = f.get_strings("tokenizer.ggml.merges");
  std::vector<int64_t> types(tokens.size(), 1);
  if (f.has("tokenizer.ggml.token_type")) {
    types = f.get_ints("tokenizer.ggml.token_type");
    BUPO_CHECK(types.size() == tokens.size(), f.path(),
               ": metadata 'tokenizer.ggml.token_type' has ", types.size(), " entries for ",
               tokens.size(), " tokens");
  }
  json vocab = json::object(), added = json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    vocab[tokens[i]] = i;
    if (types[i] == 3 || types[i] == 4)  // control, user-defined
      added.push_back({{"id", i},
                       {"content", tokens[i]},
                       {"special", types[i] == 3},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false}});
  }
  const std::string pre = f.get_string_or("tokenizer.ggml.pre", "default");
  json normalizer = nullptr, pre_tok;
  bool ignore_merges = false;
  const json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", false},
                           {"use_regex", false}};
  auto split = [](const char* re) {
    return json{{"type", "Split"},
                {"pattern", {{"Regex", re}}},
                {"behavior", "Isolated"},
                {"invert", false}};
  };
  if (pre == "smollm") {
    pre_tok = {{"type", "Sequence"},
               {"pretokenizers",
                {{{"type", "Digits"}, {"individual_digits", true}},
                 {{"type", "ByteLevel"},
                  {"add_prefix_space", false},
                  {"trim_offsets", true},
                  {"use_regex", true}}}}};
  } else if (pre == "gpt2" || pre == "default") {
    pre_tok = {{"type", "ByteLevel"},
               {"add_prefix_space", false},
               {"trim_offsets", true},
               {"use_regex", true}};
  } else if (pre == "qwen2") {
    normalizer = {{"type", "NFC"}};
    pre_tok = {{"type", "Sequence"}, {"pretokenizers", {split(kQwen2Regex), byte_level}}};
  } else if (pre == "llama-bpe" || pre == "llama3") {
    ignore_merges = true;
    pre_tok = {{"type", "Sequence"}, {"pretokenizers", {split(kLlama3Regex), byte_level}}};
  } else {
    fail(f.path(), ": metadata 'tokenizer.ggml.pre' = '", pre,
         "' is not supported (expected smollm, gpt2, default, qwen2 or llama-bpe)");
  }
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", normalizer},
          {"pre_tokenizer", pre_tok},
          {"post_processor", nullptr},
          {"decoder", byte_level},
          {"model",
           {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", ignore_merges},
            {"vocab", vocab},
            {"merges", merges}}}};
}

json tokenizer_config_from_gguf(const GgufFile& f) {
  const auto& tokens = f.get_strings("tokenizer.ggml.tokens");
  auto tok = [&](const char* key) -> json {
    if (!f.has(key)) return nullptr;
    const int64_t id = f.get_int(key);
    BUPO_CHECK(id >= 0 && id < static_cast<int64_t>(tokens.size()), f.path(), ": metadata '", key,
               "' = ", id, " is outside the vocabulary");
    return tokens[static_cast<size_t>(id)];
  };
  json c = {{"bos_token", tok("tokenizer.ggml.bos_token_id")},
            {"eos_token", tok("tokenizer.ggml.eos_token_id")},
            {"pad_token", tok("tokenizer.ggml.padding_token_id")},
            {"add_bos_token", f.has("tokenizer.ggml.add_bos_token") &&
                                  f.get_int("tokenizer.ggml.add_bos_token") != 0},
            {"tokenizer_class", "PreTrainedTokenizerFast"},
            {"clean_up_tokenization_spaces", false},
            {"model_max_length", f.get_int_or("llama.context_length", 4096)}};
  if (f.has("tokenizer.chat_template"))
    c["chat_template"] = f.get_string("tokenizer.chat_template");
  return c;
}

Tokenizer load_tokenizer(const std::string& path) {
  if (is_gguf_path(path)) {
    auto f = GgufFile::open(path);
    return Tokenizer::from_json(tokenizer_json_from_gguf(*f), path);
  }
  if (std::filesystem::is_directory(path)) {
    const auto p = std::filesystem::path(path) / "tokenizer.json";
    BUPO_CHECK(std::filesystem::exists(p), path, ": no tokenizer.json in this directory");
    return Tokenizer::from_file(p.string());
  }
  return Tokenizer::from_file(path);
}

std::unique_ptr<Model> load_model(const std::string& path, ParallelContext pc, Backend& be) {
  if (!is_gguf_path(path)) return Model::load(path, std::move(pc), be);
  auto f = GgufFile::open(path);
  auto m = std::make_unique<Model>(config_from_gguf(*f), std::move(pc), be);
  load_gguf_weights(*m, *f);
  return m;
}

}  // namespace bupo
