// Training and validation prompts: verl-style JSONL rows (`prompt` message list or string,
// `reward_model.ground_truth`, `data_source`) rendered with a chat template and tokenized once at
// load; or the built-in verifiable task (multi-digit arithmetic answered in \boxed{}), generated
// from (seed, index) so it needs no files. A deterministic shuffled sampler whose cursor is saved
// in checkpoints.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.hpp"

namespace bupo::rl {

// The ground truth at `field` (dotted path) of a JSONL row as written: a string, or a number in its
// exact source text. Empty or blank: an error naming the field.
std::string ground_truth_text(const std::string& line, const std::string& where,
                              const std::string& field);

struct Problem {
  int64_t index = 0;            // row in the source (0-based)
  std::vector<int32_t> prompt;  // token ids, generation prompt included
  std::string ground_truth;
  std::string data_source;
  std::string solution;  // built-in task only: the reference response (for warm start)
};

class PromptSet {
 public:
  // JSONL rows; errors name "<file>:<line>" and the field.
  static PromptSet from_jsonl(const std::string& path, const Tokenizer& tok,
                              const std::string& template_name, int64_t max_prompt_tokens,
                              int64_t limit);
  // The built-in task: `size` problems "a<op>b=" with `digits`-digit operands, answer "\boxed{c}".
  static PromptSet arithmetic(const Tokenizer& tok, int64_t digits, const std::string& ops,
                              int64_t size, uint64_t seed, const std::string& name);
  // Either of the above from a config string ("builtin:arithmetic" or a path).
  int64_t size() const { return static_cast<int64_t>(problems_.size()); }
  const Problem& at(int64_t i) const { return problems_.at(static_cast<size_t>(i)); }
  const std::string& name() const { return name_; }

 private:
  std::vector<Problem> problems_;
  std::string name_;
};

// One problem of the built-in task from (seed, index): prompt text and answer.
struct ArithmeticProblem {
  std::string prompt, answer;
};
ArithmeticProblem arithmetic_problem(int64_t digits, const std::string& ops, uint64_t seed,
                                     int64_t index);

// A byte-level BPE tokenizer.json with the 256 byte tokens and no merges (one token per byte),
// plus <|endoftext|> (256), <|im_start|> (257), <|im_end|> (258): for fresh models on the
// built-in task. Hugging Face `tokenizers` loads it as it is.
std::string builtin_byte_tokenizer_json();

struct SamplerState {
  int64_t epoch = 0;  // current pass over the data
  int64_t pos = 0;    // next position in this epoch's permutation
  int64_t drawn = 0;  // prompts drawn so far (the random key of each draw)
};

// Epoch e visits the rows in the order of a permutation seeded by (seed, e) (identity when not
// shuffling); draws continue across epoch boundaries.
class Sampler {
 public:
  Sampler(int64_t n, uint64_t seed, bool shuffle);
  struct Draw {
    int64_t index;  // row
    int64_t key;    // unique per draw: the randomness key of its rollouts
  };
  std::vector<Draw> next(int64_t k);
  const SamplerState& state() const { return st_; }
  void set_state(const SamplerState& s);

 private:
  int64_t n_;
  uint64_t seed_;
  bool shuffle_;
  SamplerState st_;
  std::vector<int64_t> perm_;
  void make_perm();
};

uint64_t mix64(uint64_t x);  // splitmix64 finaliser

}  // namespace bupo::rl
