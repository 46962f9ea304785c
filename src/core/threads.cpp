#include "core/threads.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace bupo {
namespace {
int g_threads = 0;
// Default thread count: OMP_NUM_THREADS when set; otherwise the cores divided among the ranks an
// MPI launcher placed on this node (never more threads than cores: spinning OpenMP threads of
// oversubscribed ranks starve the collectives).
int default_threads() {
  if (std::getenv("OMP_NUM_THREADS")) return omp_get_max_threads();
  int n = static_cast<int>(std::thread::hardware_concurrency());
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"})
    if (const char* e = std::getenv(v)) {
      const int local = std::atoi(e);
      if (local > 0) {
        n = std::max(1, n / local);
        break;
      }
    }
  return n;
}
}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = default_threads();
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
