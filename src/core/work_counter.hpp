// A per-thread count of elementary steps (a merge considered, a character scanned) in code whose
// cost must stay near-linear in its input: the tokenizer's BPE and pre-tokenizer, the verifier.
// Tests bound the work on MB-sized inputs with it (counted operations, not time: immune to a
// loaded CI box). One thread-local add per step; nothing else reads it.
#pragma once
#include <cstdint>

namespace bupo::work {
inline thread_local uint64_t steps = 0;
inline void count(uint64_t n = 1) {
  steps += n;
}
}  // namespace bupo::work
