#include "core/threads.hpp"

#include <cblas.h>
#include <omp.h>

#include <thread>

namespace bupo {
namespace {
int g_threads = 0;
}
void set_num_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  g_threads = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(
      1);  // BLAS runs per tile inside our OpenMP loops (kernels/cpu/linear.cpp)
}
int num_threads() {
  return g_threads > 0 ? g_threads : omp_get_max_threads();
}
}  // namespace bupo
