// Storage dtypes of checkpoints and their conversion to and from fp32 compute.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace bupo {

enum class DType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2 };

const char* dtype_name(DType d);  // safetensors spelling, e.g. "BF16"
bool dtype_from_name(const std::string& s, DType* out);
size_t dtype_size(DType d);
bool dtype_is_float_loadable(DType d);  // F32, F16, BF16, F64

inline float bf16_to_f32(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {  // round to nearest even, NaN kept quiet (as torch)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  const uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;
  return static_cast<uint16_t>(u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even; overflow to inf

// Convert n elements of `src` (dtype d, little-endian) into fp32.
void convert_to_f32(DType d, const void* src, float* dst, size_t n);

}  // namespace bupo
