// A tensor as the backend interface sees it: a non-owning view of row-major, contiguous memory
// that says where the memory lives (its device) and what it holds (its dtype). Code above the
// backends never dereferences `data` unless the device is the host (Backend::host_accessible);
// it moves data with Backend::upload / download / copy instead.
//
// Views are small value types (no heap allocation: up to four dimensions inline), made and
// sliced freely inside the step loop.
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/error.hpp"
#include "core/shape.hpp"
#include "io/dtype.hpp"

namespace bupo {

enum class Device : uint8_t { CPU, CUDA };
const char* device_name(Device d);  // "cpu", "cuda"

// Up to four dimensions, inline.
class Dims {
 public:
  static constexpr int kMax = 4;
  Dims() = default;
  Dims(std::initializer_list<int64_t> d);
  explicit Dims(const Shape& s);
  int rank() const { return rank_; }
  int64_t operator[](int i) const { return v_[static_cast<size_t>(i)]; }
  int64_t numel() const;
  bool operator==(const Dims& o) const;
  std::string str() const;

 private:
  std::array<int64_t, kMax> v_{};
  int rank_ = 0;
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  Dims shape;

  Tensor() = default;
  Tensor(void* p, DType t, Device d, Dims s) : data(p), dtype(t), device(d), shape(s) {}
  // Views of host memory (device CPU), for host buffers handed to the CPU backend.
  static Tensor host(float* p, Dims s) { return {p, DType::F32, Device::CPU, s}; }
  static Tensor host(const float* p, Dims s) {
    return {const_cast<float*>(p), DType::F32, Device::CPU, s};  // read-only by contract
  }
  static Tensor host(int32_t* p, Dims s) { return {p, DType::I32, Device::CPU, s}; }
  static Tensor host(const int32_t* p, Dims s) {
    return {const_cast<int32_t*>(p), DType::I32, Device::CPU, s};
  }

  int64_t numel() const { return shape.numel(); }
  int64_t dim(int i) const { return shape[i]; }
  int64_t rows() const { return shape.rank() == 0 ? 0 : shape[0]; }
  int64_t row_numel() const;  // elements per row (dims 1..)
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  bool empty() const { return data == nullptr; }  // "no tensor" (an optional argument)

  // Typed pointers (checked dtype); meaningful to dereference on host devices only.
  float* f32() const { return typed<float>(DType::F32); }
  int32_t* i32() const { return typed<int32_t>(DType::I32); }
  double* f64() const { return typed<double>(DType::F64); }

  Tensor rows(int64_t r0, int64_t n) const;   // rows [r0, r0+n) along dim 0
  Tensor flat(int64_t off, int64_t n) const;  // elements [off, off+n) as a 1-D view
  Tensor view(Dims s) const;                  // the same memory with another shape (same numel)

 private:
  template <typename T>
  T* typed(DType want) const {
    BUPO_CHECK(data == nullptr || dtype == want, "tensor of dtype ", dtype_name(dtype), " used as ",
               dtype_name(want));
    return static_cast<T*>(data);
  }
};

}  // namespace bupo
