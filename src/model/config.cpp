#include "model/config.hpp"

#include <cmath>

#include "core/error.hpp"

namespace bupo {

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::Llama:
      return "LlamaForCausalLM";
    case Arch::Qwen2:
      return "Qwen2ForCausalLM";
    case Arch::Qwen3:
      return "Qwen3ForCausalLM";
  }
  return "?";
}

std::string ModelConfig::architecture() const {
  std::string a = arch_name(arch);
  if (value_head)
    a = a.substr(0, a.size() - std::string("ForCausalLM").size()) + "ForTokenClassification";
  return a;
}

ModelConfig ModelConfig::from_json(const json& j, const std::string& src) {
  BUPO_CHECK(j.is_object(), src, ": expected a JSON object");
  ModelConfig c;
  auto archs = j.find("architectures");
  BUPO_CHECK(archs != j.end() && archs->is_array() && !archs->empty() && (*archs)[0].is_string(),
             src, ": field 'architectures': expected a list like [\"Qwen3ForCausalLM\"]");
  std::string a = (*archs)[0].get<std::string>();
  if (a.ends_with("ForTokenClassification")) {  // a value model (critic): one scalar per token
    c.value_head = true;
    const int64_t labels = j.contains("id2label") && j["id2label"].is_object()
                               ? static_cast<int64_t>(j["id2label"].size())
                               : json_int_or(j, "num_labels", src, 1, 1);
    BUPO_CHECK(labels == 1, src, ": field 'id2label'/'num_labels': a value model has 1 label, got ",
               labels);
    a = a.substr(0, a.size() - std::string("ForTokenClassification").size()) + "ForCausalLM";
  }
  if (a == "LlamaForCausalLM")
    c.arch = Arch::Llama;
  else if (a == "Qwen2ForCausalLM")
    c.arch = Arch::Qwen2;
  else if (a == "Qwen3ForCausalLM")
    c.arch = Arch::Qwen3;
  else
    fail(src, ": field 'architectures': unsupported architecture '", a,
         "' (expected LlamaForCausalLM, Qwen2ForCausalLM or Qwen3ForCausalLM, or their "
         "*ForTokenClassification value models)");

  c.vocab_size = json_int(j, "vocab_size", src, 1);
  c.hidden_size = json_int(j, "hidden_size", src, 1);
  c.intermediate_size = json_int(j, "intermediate_size", src, 1);
  c.num_layers = json_int(j, "num_hidden_layers", src, 1);
  c.num_heads = json_int(j, "num_attention_heads", src, 1);
  c.num_kv_heads = json_int_or(j, "num_key_value_heads", src, 1, c.num_heads);
  BUPO_CHECK(c.hidden_size % c.num_heads == 0 || j.contains("head_dim"), src,
             ": field 'hidden_size' (", c.hidden_size,
             ") is not a multiple of 'num_attention_heads' (", c.num_heads,
             ") and no 'head_dim' is given");
  c.head_dim = json_int_or(j, "head_dim", src, 2, c.hidden_size / c.num_heads);
  c.max_position_embeddings = json_int_or(j, "max_position_embeddings", src, 1, 4096);
  c.rms_norm_eps = json_number_or(j, "rms_norm_eps", src, 1e-6);
  c.rope_theta = json_number_or(j, "rope_theta", src, 10000.0);
  c.tie_word_embeddings = json_bool_or(j, "tie_word_embeddings", src, false);
  c.torch_dtype = json_string_or(j, "torch_dtype", src, json_string_or(j, "dtype", src, "float32"));

  const std::string act = json_string_or(j, "hidden_act", src, "silu");
  BUPO_CHECK(act == "silu", src, ": field 'hidden_act': expected \"silu\", got \"", act, "\"");
  BUPO_CHECK(!json_bool_or(j, "mlp_bias", src, false), src,
             ": field 'mlp_bias': true is not supported");
  switch (c.arch) {
    case Arch::Llama:
      c.qkv_bias = json_bool_or(j, "attention_bias", src, false);
      break;
    case Arch::Qwen2:
      c.qkv_bias = true;
      break;
    case Arch::Qwen3:
      c.qk_norm = true;
      c.qkv_bias = json_bool_or(j, "attention_bias", src, false);
      break;
  }
  if (c.arch != Arch::Llama)
    BUPO_CHECK(!json_bool_or(j, "use_sliding_window", src, false), src,
               ": field 'use_sliding_window': sliding-window attention is not supported");

  // RoPE: transformers < 5 writes rope_theta + rope_scaling; transformers >= 5 writes one
  // rope_parameters object holding rope_theta and rope_type. Accept both.
  const json* rs = nullptr;
  std::string rsrc;
  if (auto rp = j.find("rope_parameters"); rp != j.end() && !rp->is_null()) {
    rsrc = src + ": field 'rope_parameters'";
    BUPO_CHECK(rp->is_object(), rsrc, ": expected an object");
    c.rope_theta = json_number_or(*rp, "rope_theta", rsrc, c.rope_theta);
    rs = &*rp;
  } else if (auto sc = j.find("rope_scaling"); sc != j.end() && !sc->is_null()) {
    rsrc = src + ": field 'rope_scaling'";
    BUPO_CHECK(sc->is_object(), rsrc, ": expected an object or null");
    rs = &*sc;
  }
  if (rs != nullptr) {
    const std::string type =
        json_string_or(*rs, "rope_type", rsrc, json_string_or(*rs, "type", rsrc, "default"));
    if (type == "llama3") {
      c.rope_scaling.factor = json_number_or(*rs, "factor", rsrc, 0.0);
      BUPO_CHECK(c.rope_scaling.factor > 0.0, rsrc, ": 'factor' must be > 0");
      c.rope_scaling.low_freq_factor = json_number_or(*rs, "low_freq_factor", rsrc, 1.0);
      c.rope_scaling.high_freq_factor = json_number_or(*rs, "high_freq_factor", rsrc, 4.0);
      c.rope_scaling.original_max_position_embeddings =
          json_number_or(*rs, "original_max_position_embeddings", rsrc, 8192.0);
    } else if (type != "default") {
      fail(rsrc, ": unsupported rope_type '", type, "' (expected \"llama3\" or \"default\")");
    }
  }
  c.validate(src);
  return c;
}

const ConfigFieldNames kHfConfigNames{
    "vocab_size",          "hidden_size",         "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim",          "max_position_embeddings",
    "rms_norm_eps",        "rope_theta"};
const ConfigFieldNames kGgufConfigNames{"token_embd.weight rows",
                                        "llama.embedding_length",
                                        "llama.feed_forward_length",
                                        "llama.block_count",
                                        "llama.attention.head_count",
                                        "llama.attention.head_count_kv",
                                        "llama.attention.key_length",
                                        "llama.context_length",
                                        "llama.attention.layer_norm_rms_epsilon",
                                        "llama.rope.freq_base"};

void ModelConfig::validate(const std::string& src, const ConfigFieldNames& n) const {
  // bounds first: every later check divides by or multiplies these
  auto in_range = [&](int64_t v, const char* name, int64_t lo, int64_t hi) {
    BUPO_CHECK(v >= lo && v <= hi, src, ": '", name, "' = ", v, " is out of range [", lo, ", ", hi,
               "]");
  };
  in_range(vocab_size, n.vocab, 1, ModelLimits::vocab);
  in_range(hidden_size, n.hidden, 1, ModelLimits::hidden);
  in_range(intermediate_size, n.ffn, 1, ModelLimits::ffn);
  in_range(num_layers, n.layers, 1, ModelLimits::layers);
  in_range(num_heads, n.heads, 1, ModelLimits::heads);
  in_range(num_kv_heads, n.kv_heads, 1, num_heads);
  in_range(head_dim, n.head_dim, 2, ModelLimits::head_dim);
  in_range(max_position_embeddings, n.max_positions, 1, ModelLimits::max_positions);
  BUPO_CHECK(num_heads % num_kv_heads == 0, src, ": '", n.heads, "' (", num_heads,
             ") must be a multiple of '", n.kv_heads, "' (", num_kv_heads, ")");
  BUPO_CHECK(head_dim % 2 == 0, src, ": '", n.head_dim, "' (", head_dim, ") must be even for RoPE");
  BUPO_CHECK(std::isfinite(rms_norm_eps) && rms_norm_eps > 0.0 && rms_norm_eps < 1.0, src, ": '",
             n.eps, "' = ", rms_norm_eps, " must be a finite number in (0, 1)");
  BUPO_CHECK(std::isfinite(rope_theta) && rope_theta > 0.0, src, ": '", n.theta, "' = ", rope_theta,
             " must be a finite number > 0");
  if (rope_scaling.factor > 0.0)
    BUPO_CHECK(std::isfinite(rope_scaling.factor) &&
                   rope_scaling.high_freq_factor > rope_scaling.low_freq_factor,
               src, ": rope_scaling: 'high_freq_factor' must exceed 'low_freq_factor'");
}

ModelConfig ModelConfig::qwen3_shape(int64_t vocab, int64_t hidden, int64_t ffn, int64_t layers,
                                     int64_t heads, int64_t kv_heads, int64_t head_dim,
                                     int64_t max_positions, bool tied) {
  ModelConfig c;
  c.arch = Arch::Qwen3;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = ffn;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.max_position_embeddings = max_positions;
  c.rope_theta = 1e6;
  c.qk_norm = true;
  c.tie_word_embeddings = tied;
  return c;
}

ModelConfig ModelConfig::load(const std::string& path) {
  return from_json(read_json_file(path), path);
}

json ModelConfig::to_json() const {
  json j;
  j["architectures"] = {architecture()};
  if (value_head) {  // transformers' token classification with one label, verl's critic
    j["num_labels"] = 1;
    j["id2label"] = {{"0", "LABEL_0"}};
    j["label2id"] = {{"LABEL_0", 0}};
  }
  j["model_type"] = arch == Arch::Llama ? "llama" : arch == Arch::Qwen2 ? "qwen2" : "qwen3";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["torch_dtype"] = torch_dtype;
  if (arch != Arch::Qwen2) j["attention_bias"] = qkv_bias;
  if (rope_scaling.factor > 0.0)
    j["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", rope_scaling.factor},
        {"low_freq_factor", rope_scaling.low_freq_factor},
        {"high_freq_factor", rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", rope_scaling.original_max_position_embeddings}};
  else
    j["rope_scaling"] = nullptr;
  return j;
}

}  // namespace bupo
