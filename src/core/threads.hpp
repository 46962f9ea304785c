// One place that sets the number of CPU threads for OpenMP loops and OpenBLAS. Every kernel
// partitions work so that each output element is computed by exactly one thread in a fixed
// order: results are bit-identical for any thread count (tests/unit/test_determinism.cpp).
#pragma once

namespace bupo {
void set_num_threads(int n);  // n <= 0: use all hardware threads
int num_threads();
}  // namespace bupo
