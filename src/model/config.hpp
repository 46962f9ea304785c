// Model hyper-parameters read from a Hugging Face config.json. Supported architectures:
//   LlamaForCausalLM   (optional attention_bias, Llama-3 rope_scaling)
//   Qwen2ForCausalLM   (q/k/v bias)
//   Qwen3ForCausalLM   (q_norm/k_norm RMSNorm over each head before RoPE)
// and their *ForTokenClassification forms with num_labels = 1: the value model (critic) of PPO,
// a scalar head score (1, d) + bias on LN_final(H^L) instead of lm_head (verl's critic).
#pragma once
#include <cstdint>
#include <string>

#include "io/json_util.hpp"
#include "model/rope_frequencies.hpp"

namespace bupo {

enum class Arch { Llama, Qwen2, Qwen3 };
const char* arch_name(Arch a);  // the HF architecture string (the causal LM)

// The names a config source gives the hyper-parameters, so that a bad value is reported under
// the name the user wrote (config.json field, GGUF metadata key, TOML key or CLI flag).
struct ConfigFieldNames {
  const char *vocab, *hidden, *ffn, *layers, *heads, *kv_heads, *head_dim, *max_positions, *eps,
      *theta;
};
extern const ConfigFieldNames kHfConfigNames;    // config.json
extern const ConfigFieldNames kGgufConfigNames;  // llama.* metadata

// Upper bounds far above every released model (largest seen: vocab 262k, d 18k, FFN 73k,
// 126 layers, 128 heads, head_dim 256, 10M positions) and low enough that no product of them
// overflows int64 and a typo (1e12) is refused before anything is allocated.
struct ModelLimits {
  static constexpr int64_t vocab = int64_t{1} << 24, hidden = int64_t{1} << 17,
                           ffn = int64_t{1} << 20, layers = 1024, heads = 1024, head_dim = 1024,
                           max_positions = int64_t{1} << 24;
};

struct ModelConfig {
  Arch arch = Arch::Qwen3;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;        // d
  int64_t intermediate_size = 0;  // FFN width
  int64_t num_layers = 0;         // L
  int64_t num_heads = 0;          // H
  int64_t num_kv_heads = 0;       // Hkv
  int64_t head_dim = 0;           // D (default d / H)
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;  // factor 0: plain theta
  bool qkv_bias = false;     // Qwen2 always; Llama when attention_bias
  bool qk_norm = false;      // Qwen3
  bool tie_word_embeddings = false;
  // a value model: score.weight (1, d) and score.bias (1) replace lm_head (the embedding stays)
  bool value_head = false;
  std::string torch_dtype = "float32";

  std::string architecture() const;  // "Qwen3ForCausalLM", "Qwen3ForTokenClassification", ...

  static ModelConfig from_json(const json& j, const std::string& src);
  static ModelConfig load(const std::string& path);  // path of config.json
  // A Qwen3-architecture shape (q/k norms, RoPE θ = 1e6, no QKV bias) without a checkpoint: the
  // benchmarks', the tests' and bupo plan's model shapes.
  static ModelConfig qwen3_shape(int64_t vocab, int64_t hidden, int64_t ffn, int64_t layers,
                                 int64_t heads, int64_t kv_heads, int64_t head_dim,
                                 int64_t max_positions, bool tied);
  json to_json() const;  // a config.json HF transformers loads
  // Every value in range (see ModelLimits) and consistent; errors name `src` and the field.
  void validate(const std::string& src, const ConfigFieldNames& names = kHfConfigNames) const;
};

}  // namespace bupo
