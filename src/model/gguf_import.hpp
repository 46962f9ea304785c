// Import of `llama`-architecture GGUF files: the model config from metadata, the weights
// (dequantised to fp32, HF tensor names, the row permutation of Q and K that GGUF conversion
// applies for its RoPE layout undone), and the tokenizer from tokenizer.ggml.* metadata as a
// Hugging Face tokenizer.json.
#pragma once
#include <memory>
#include <string>

#include "io/gguf.hpp"
#include "io/json_util.hpp"
#include "model/model.hpp"

namespace bupo {

ModelConfig config_from_gguf(const GgufFile& f);
void load_gguf_weights(Model& m, const GgufFile& f);
// tokenizer.json equivalent of the GGUF tokenizer (BPE "gpt2" models; pre-tokenizers smollm, gpt2,
// qwen2, llama-bpe); throws naming the metadata key for anything else.
json tokenizer_json_from_gguf(const GgufFile& f);
// tokenizer_config.json: bos/eos tokens and the chat template string.
json tokenizer_config_from_gguf(const GgufFile& f);

// A tokenizer from a tokenizer.json, a model directory holding one, or a .gguf file.
class Tokenizer;
Tokenizer load_tokenizer(const std::string& path);

// A model from a Hugging Face directory or a .gguf file.
std::unique_ptr<Model> load_model(const std::string& path, ParallelContext pc,
                                  Backend& be = cpu_backend());
// The model's shape only (config.json, or the GGUF metadata): for checking a parallel layout
// before any weights are read.
ModelConfig model_config_of(const std::string& path);
bool is_gguf_path(const std::string& path);

// Undo convert_hf_to_gguf's permute() of q_proj/k_proj rows: within each head, GGUF interleaves
// the two RoPE halves (row 2i+j of the head holds HF row j·D/2 + i). w (heads·D, cols), in place.
void unpermute_qk_rows(float* w, int64_t heads, int64_t head_dim, int64_t cols);

}  // namespace bupo
