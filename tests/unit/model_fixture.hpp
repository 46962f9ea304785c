// A tiny random decoder for invariants tests (papers.md §4: L=4, d=32, small vocabulary).
#pragma once
#include "model/model.hpp"

namespace bupo::test {

inline ModelConfig tiny_config(Arch arch = Arch::Qwen3, bool tied = false) {
  ModelConfig c;
  c.arch = arch;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 128;
  c.rope_theta = 10000.0;
  c.qk_norm = arch == Arch::Qwen3;
  c.qkv_bias = arch == Arch::Qwen2;
  c.tie_word_embeddings = tied;
  return c;
}

inline std::unique_ptr<Model> tiny_model(Arch arch = Arch::Qwen3, bool tied = false,
                                         uint64_t seed = 7) {
  auto m = std::make_unique<Model>(tiny_config(arch, tied), ParallelContext::single());
  m->init_random(seed, 0.2f);  // large enough that layers visibly change the distributions
  return m;
}

inline Batch tiny_batch() {
  return Batch::from_sequences({{1, 5, 9, 33, 2, 60, 7}, {4, 4, 18, 50, 11}});
}

}  // namespace bupo::test
