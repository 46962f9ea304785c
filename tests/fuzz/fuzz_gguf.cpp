// libFuzzer target: the GGUF reader and dequantiser on arbitrary bytes. Any input must either
// parse or end in bupo::Error — never a crash, a hang or an out-of-bounds access.
#include <cstdint>
#include <vector>

#include "core/error.hpp"
#include "io/gguf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = bupo::GgufFile::parse(data, size, "fuzz.gguf");
    std::vector<float> out;
    for (const auto& t : f->tensors()) {
      if (t.numel() > (1u << 22))
        continue;  // keep memory bounded; bounds were checked at parse time
      out.resize(t.numel());
      f->dequantize(t, out.data());
    }
    for (const auto& [k, v] : f->metadata()) (void)f->has(k);
  } catch (const bupo::Error&) {
  }
  return 0;
}
