#include "io/dtype.hpp"

#include <cmath>

#include "core/error.hpp"

namespace bupo {
namespace {
struct DTypeInfo {
  DType d;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kTypes[] = {
    {DType::F32, "F32", 4},   {DType::F16, "F16", 2},         {DType::BF16, "BF16", 2},
    {DType::F64, "F64", 8},   {DType::I64, "I64", 8},         {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},   {DType::I8, "I8", 1},           {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1}, {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1}};
}  // namespace

const char* dtype_name(DType d) {
  for (const auto& t : kTypes)
    if (t.d == d) return t.name;
  return "?";
}
bool dtype_from_name(const std::string& s, DType* out) {
  for (const auto& t : kTypes)
    if (s == t.name) {
      *out = t.d;
      return true;
    }
  return false;
}
size_t dtype_size(DType d) {
  for (const auto& t : kTypes)
    if (t.d == d) return t.size;
  return 0;
}
bool dtype_is_float_loadable(DType d) {
  return d == DType::F32 || d == DType::F16 || d == DType::BF16 || d == DType::F64;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal
  } else if (exp == 31) {
    v = mant ? std::nanf("") : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (absu >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (absu < 0x38800000u) {  // result is subnormal or zero: value / 2^-24, round to nearest even
    const float a = std::fabs(f) * 16777216.0f;  // exact scaling by 2^24
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(a)));
  }
  const uint32_t mant = absu & 0x7fffffu;
  uint32_t exp = (absu >> 23) - 112;  // rebias 127 -> 15
  uint32_t h = (exp << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent: correct
  return static_cast<uint16_t>(sign | h);
}

void convert_to_f32(DType d, const void* src, float* dst, size_t n) {
  const auto* b = static_cast<const unsigned char*>(src);
  switch (d) {
    case DType::F32:
      std::memcpy(dst, b, n * 4);
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, b + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, b + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) {
        double x;
        std::memcpy(&x, b + 8 * i, 8);
        dst[i] = static_cast<float>(x);
      }
      return;
    default:
      fail("convert_to_f32: dtype ", dtype_name(d), " is not a floating-point weight type");
  }
}

}  // namespace bupo
