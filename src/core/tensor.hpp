// A dense, row-major fp32 tensor that owns its storage, and a non-owning view used by kernels.
// Shapes are written in comments as (rows, cols) the way llm.c does: e.g. x (N, d).
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.hpp"

namespace bupo {

using Shape = std::vector<int64_t>;

inline int64_t numel_of(const Shape& s) {
  return std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<>());
}
std::string shape_str(const Shape& s);

struct Tensor {
  Shape shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(Shape s, float fill = 0.0f) : shape(std::move(s)), data(numel_of(shape), fill) {}
  Tensor(std::initializer_list<int64_t> s) : Tensor(Shape(s)) {}

  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t dim(size_t i) const { return shape.at(i); }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
  void zero() { std::fill(data.begin(), data.end(), 0.0f); }
  void resize(Shape s) {
    shape = std::move(s);
    data.assign(numel_of(shape), 0.0f);
  }
};

}  // namespace bupo
