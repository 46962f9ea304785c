// libFuzzer target: bupo::fuzz::verifier (tests/fuzz/fuzz_text_inputs.hpp) on arbitrary bytes.
#include "fuzz_text_inputs.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bupo::fuzz::verifier(data, size);
  return 0;
}
