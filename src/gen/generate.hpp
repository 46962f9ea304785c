// Batched generation with a KV cache: prefill of every (prompt, sample) slot, then decode steps
// for the active slots, on the model's backend (the cache, logits and sampling buffers are carved
// once per call from the backend's pools; a decode step allocates nothing). Sampling with
// temperature, top-k, top-p, and a per-token temperature hook (HAPO's adaptive temperature,
// papers.md §2.2). Randomness is counter-based, keyed by (seed, prompt, sample, position): a
// response does not depend on batch size or order.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/model.hpp"
#include "tokenizer/tokenizer.hpp"

namespace bupo {

struct TokenContext {                            // what a temperature hook sees for one token
  int64_t prompt = 0, sample = 0, position = 0;  // prompt key, sample, position of the new token
  float entropy = 0.0f;                          // entropy of the untempered distribution (T = 1)
};
using TemperatureHook = std::function<float(const TokenContext&)>;

struct GenerateOptions {
  int64_t max_new_tokens = 256;
  float temperature = 1.0f;  // 0: greedy
  float top_p = 1.0f;        // 1: off
  int64_t top_k = 0;         // 0: off
  uint64_t seed = 0;
  std::vector<int32_t> stop_ids;          // e.g. EOS
  std::vector<std::string> stop_strings;  // needs a tokenizer
  TemperatureHook temperature_hook;       // overrides `temperature` per token when set
  int64_t max_batch_tokens = 4096;        // prefill packing
  // Random-key identity of each prompt (e.g. its dataset index, or step·B + index); default: the
  // prompt's index in this call. Same key, sample and position -> same random number.
  std::vector<int64_t> prompt_keys;
  // Ids >= vocab_limit (a padded vocabulary's filler rows) are never sampled; 0: no limit.
  int64_t vocab_limit = 0;
};

struct Generation {
  int64_t prompt = 0, sample = 0;
  std::vector<int32_t> ids;         // generated tokens (the stop token included)
  std::vector<float> logprobs;      // log π_T(token): the tempered distribution before top-k/top-p
  std::vector<float> entropies;     // entropy of that distribution (nats)
  std::vector<float> temperatures;  // temperature used for each token
  std::vector<float> raw_entropies;  // entropy of the untempered distribution (T = 1, full policy)
  std::string finish_reason;         // "eos", "stop" or "length"
  std::string text;                  // decoded, when a tokenizer is given
};

// One uniform number in [0, 1) for (seed, prompt, sample, position). Sampling itself is a backend
// op (Backend::sample; the CPU reference is backend/cpu/sampling.hpp) fed with these numbers, so a
// rollout is the same on every device up to the rounding of its logits.
double sampling_uniform(uint64_t seed, int64_t prompt, int64_t sample, int64_t position);

// prompts × n_samples generations, prompt-major order. tok may be null (no text, no stop strings).
std::vector<Generation> generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                 int64_t n_samples, const GenerateOptions& opt,
                                 const Tokenizer* tok = nullptr);

// Token ids that end a turn for common chat formats, those present in the vocabulary.
std::vector<int32_t> default_stop_ids(const Tokenizer& tok);

}  // namespace bupo
