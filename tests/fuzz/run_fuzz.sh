#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for SECONDS (default 60),
# seeded from tests/fuzz/corpus/<target>/. Inputs that crash are written to build/fuzz/crashes/;
# copy them into tests/fuzz/corpus/<target>/ so tests/unit/test_fuzz_corpus.cpp keeps them as
# regression tests.   usage: tests/fuzz/run_fuzz.sh [SECONDS] [gguf|safetensors]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
secs=${1:-60}
targets=${2:-"gguf safetensors"}
out="$root/build/fuzz"
mkdir -p "$out/crashes"
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -I"$root/src" -I"$root")
srcs=("$root/src/io/gguf.cpp" "$root/src/io/dtype.cpp" "$root/src/io/safetensors.cpp" "$root/src/io/json_util.cpp"
      "$root/src/core/tensor.cpp")
for t in $targets; do
  clang++ "${flags[@]}" "$root/tests/fuzz/fuzz_$t.cpp" "${srcs[@]}" -o "$out/fuzz_$t"
  mkdir -p "$out/corpus_$t"
  echo "== fuzz_$t for ${secs}s"
  "$out/fuzz_$t" "$out/corpus_$t" "$root/tests/fuzz/corpus/$t" -max_total_time="$secs" -max_len=8192 \
    -artifact_prefix="$out/crashes/${t}_" -print_final_stats=1 2>&1 | tail -12
done
