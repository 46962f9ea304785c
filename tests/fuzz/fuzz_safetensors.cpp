// libFuzzer target: the safetensors reader on arbitrary bytes (header JSON, offsets, dtypes).
#include <cstdint>
#include <vector>

#include "core/error.hpp"
#include "io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = bupo::SafetensorsFile::parse(data, size, "fuzz.safetensors");
    std::vector<float> out;
    for (const auto& [name, t] : f->tensors()) {
      const auto n = static_cast<size_t>(bupo::numel_of(t.shape));
      if (n > (1u << 22)) continue;
      out.resize(n);
      try {
        f->read_f32(t, out.data());
      } catch (const bupo::Error&) {
      }
    }
  } catch (const bupo::Error&) {
  }
  return 0;
}
