// Token embedding lookup over a (possibly vocab-sharded) table E (V_local, C) whose first row is
// global id `vocab_start`. Ids outside [vocab_start, vocab_start+V_local) give zero rows, so that
// an all-reduce over the tensor-parallel group assembles the full embedding (Megatron's
// VocabParallelEmbedding).
#pragma once
#include <cstdint>

namespace bupo::cpu {
// y (N, C)
void embedding_forward(float* y, const int32_t* ids, const float* E, int64_t N, int64_t C,
                       int64_t vocab_start, int64_t V_local);
// dE (V_local, C) += scatter of dy (N, C). Threads own column ranges: deterministic.
void embedding_backward(float* dE, const int32_t* ids, const float* dy, int64_t N, int64_t C,
                        int64_t vocab_start, int64_t V_local);
}  // namespace bupo::cpu
