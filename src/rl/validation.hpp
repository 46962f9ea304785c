// Validation: avg@n and unbiased pass@k of the current policy on each validation set, prompts
// sharded over the data-parallel replicas (random keys are the global prompt indices, so the
// result does not depend on the layout), written to the diagnostics file.
#pragma once
#include <cstdint>

namespace bupo::rl {

struct Run;
void validate(Run& r, int64_t step);

}  // namespace bupo::rl
