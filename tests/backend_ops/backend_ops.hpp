// The backend-ops test (ggml's test-backend-ops): every op of the backend interface as a case on
// random inputs (not zeros). A case runs its op(s) on any backend through the interface and
// returns host arrays. Three checks use the cases:
//   reference   the CPU backend against a naive fp64 implementation written here (independent of
//               backend/cpu), with an absolute/relative tolerance per case;
//   gradient    every backward op against central finite differences of its forward, on the
//               backend under test, for L = Σ w ⊙ outputs with random w;
//   versus      any other backend against the CPU backend: NMSE = Σ(a−b)²/Σb² per output, bounded
//               per case and precision (1e-5 for fp32 paths, 1e-2 for bf16 paths).
// tests/unit/test_backend_ops.cpp runs the CPU checks; tests/gpu runs the same cases on CUDA.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "backend/backend.hpp"

namespace bupo::test::ops {

// A host array with a shape: F32 values, I32 indices or F64 values.
struct Array {
  DType dtype = DType::F32;
  Dims shape;
  std::vector<float> f;
  std::vector<int32_t> i;
  std::vector<double> d;
  int64_t numel() const { return shape.numel(); }
  double at(int64_t k) const;  // as double, whatever the dtype
};
using Arrays = std::map<std::string, Array>;

Array f32(Dims s, std::vector<float> v);
Array i32(Dims s, std::vector<int32_t> v);
Array f64(Dims s, std::vector<double> v);
Array randn(Dims s, uint64_t seed, float scale = 1.0f);

struct Case {
  std::string name;
  std::vector<Op> ops;  // the ops this case exercises (coverage and supports())
  Arrays inputs;
  // Runs the op(s) on a backend: inputs are uploaded, outputs downloaded (host arrays).
  std::function<Arrays(Backend&, const Arrays&)> run;
  // Naive fp64 outputs of `run` (checked on the CPU backend), or empty.
  std::function<Arrays(const Arrays&)> reference;
  double ref_tol = 1e-5;  // |got − want| <= ref_tol · max(1, |want|)
  // The gradient of L = Σ_k Σ_j w_k[j]·run(in)[k][j] with respect to `grad_inputs`, from the
  // backward op(s) given the upstream w (same names and shapes as run's outputs); or empty.
  std::function<Arrays(Backend&, const Arrays& in, const Arrays& upstream)> backward;
  std::vector<std::string> grad_inputs;
  std::vector<std::string> fd_outputs;  // the outputs that enter L (empty: all of them)
  double fd_step = 1e-2, fd_tol = 3e-3;
  double nmse_f32 = 1e-5;   // versus the CPU backend, fp32 paths
  double nmse_bf16 = 1e-2;  // versus the CPU backend, bf16 paths
};

std::vector<Case> all_cases();

// Upload / download helpers for cases (device memory from the backend's scratch arena, released
// by the caller's ArenaScope).
Tensor to_device(Backend& be, const Array& a);
Array to_host(Backend& be, const Tensor& t);

// The checks (gtest assertions inside).
void check_reference(const Case& c, Backend& be);
void check_gradient(const Case& c, Backend& be);
// `precision`: the compute dtype of the backend's path (F32 or BF16) picks the NMSE bound.
void check_versus_cpu(const Case& c, Backend& be, DType precision = DType::F32);
double nmse(const Array& got, const Array& want);

}  // namespace bupo::test::ops
