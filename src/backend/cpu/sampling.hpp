// Sampling one token from a row of logits, and the entropy of a row (the CPU reference of
// Backend::sample / row_entropy). Softmax in fp64; inverse-CDF sampling at a given uniform number.
#pragma once
#include <cstdint>

namespace bupo::cpu {

// Entropy (nats) of softmax(z), z (V).
float entropy_of_logits(const float* z, int64_t V);

// Samples from z (V) with temperature (<= 0: greedy, reporting the T = 1 distribution), top-k
// (0: off) and top-p (1: off) at uniform u in [0, 1): inverse CDF in token-id order without a cut,
// in probability order (ties by id) with one. Writes the token's log-prob under the tempered
// distribution before the cut and that distribution's entropy. work_p (V doubles) and work_idx
// (V ints) may be null (then allocated here).
int32_t sample_token(const float* z, int64_t V, float temperature, float top_p, int64_t top_k,
                     double u, float* logprob, float* entropy, double* work_p = nullptr,
                     int32_t* work_idx = nullptr);

}  // namespace bupo::cpu
