// libFuzzer target: bupo::fuzz::jsonl (tests/fuzz/fuzz_text_inputs.hpp) on arbitrary bytes.
#include "fuzz_text_inputs.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bupo::fuzz::jsonl(data, size);
  return 0;
}
