#include "backend/tensor.hpp"

namespace bupo {

const char* device_name(Device d) {
  return d == Device::CPU ? "cpu" : "cuda";
}

Dims::Dims(std::initializer_list<int64_t> d) {
  BUPO_CHECK(d.size() <= kMax, "tensor: at most ", kMax, " dimensions, got ", d.size());
  for (int64_t x : d) v_[static_cast<size_t>(rank_++)] = x;
}
Dims::Dims(const Shape& s) {
  BUPO_CHECK(s.size() <= kMax, "tensor: at most ", kMax, " dimensions, got ", s.size());
  for (int64_t x : s) v_[static_cast<size_t>(rank_++)] = x;
}
int64_t Dims::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= v_[static_cast<size_t>(i)];
  return n;
}
bool Dims::operator==(const Dims& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (v_[static_cast<size_t>(i)] != o.v_[static_cast<size_t>(i)]) return false;
  return true;
}
std::string Dims::str() const {
  std::string s = "(";
  for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(v_[static_cast<size_t>(i)]);
  return s + ")";
}

int64_t Tensor::row_numel() const {
  int64_t n = 1;
  for (int i = 1; i < shape.rank(); ++i) n *= shape[i];
  return n;
}

Tensor Tensor::rows(int64_t r0, int64_t n) const {
  BUPO_CHECK(shape.rank() >= 1 && r0 >= 0 && n >= 0 && r0 + n <= shape[0], "tensor ", shape.str(),
             ": rows [", r0, ", ", r0 + n, ") out of range");
  Dims d;
  switch (shape.rank()) {
    case 1:
      d = Dims{n};
      break;
    case 2:
      d = Dims{n, shape[1]};
      break;
    case 3:
      d = Dims{n, shape[1], shape[2]};
      break;
    default:
      d = Dims{n, shape[1], shape[2], shape[3]};
      break;
  }
  char* p = static_cast<char*>(data);
  return {p == nullptr ? nullptr : p + static_cast<size_t>(r0 * row_numel()) * dtype_size(dtype),
          dtype, device, d};
}

Tensor Tensor::flat(int64_t off, int64_t n) const {
  BUPO_CHECK(off >= 0 && n >= 0 && off + n <= shape.numel(), "tensor ", shape.str(), ": elements [",
             off, ", ", off + n, ") out of range");
  char* p = static_cast<char*>(data);
  return {p == nullptr ? nullptr : p + static_cast<size_t>(off) * dtype_size(dtype), dtype, device,
          Dims{n}};
}

Tensor Tensor::view(Dims s) const {
  BUPO_CHECK(s.numel() == shape.numel(), "tensor ", shape.str(), ": cannot view as ", s.str());
  return {data, dtype, device, s};
}

}  // namespace bupo
