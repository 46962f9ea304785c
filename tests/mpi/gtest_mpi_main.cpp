// main() of the MPI test programs: MPI around GoogleTest, output from rank 0 only, and the exit
// status the worst of all ranks (a failure on any rank fails the ctest).
#include <gtest/gtest.h>
#include <mpi.h>

#include "parallel/mpi_comm.hpp"

int main(int argc, char** argv) {
  bupo::MpiSession mpi(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0)
    delete ::testing::UnitTest::GetInstance()->listeners().Release(
        ::testing::UnitTest::GetInstance()->listeners().default_result_printer());
  int failed = RUN_ALL_TESTS();
  MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return failed;
}
