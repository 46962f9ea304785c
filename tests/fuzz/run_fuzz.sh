#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for SECONDS (default 60),
# seeded from tests/fuzz/corpus/<target>/ (what it adds goes to build/fuzz/corpus_<target>/).
# Inputs that crash, leak or time out (-timeout=10: super-linear work) are written to
# build/fuzz/crashes/; copy them into tests/fuzz/corpus/<target>/ so that
# tests/unit/test_fuzz_corpus.cpp keeps them as regression tests in every preset.
#   usage: tests/fuzz/run_fuzz.sh [SECONDS] ["TARGET ..."]
#   targets: gguf safetensors tokenizer_json config_json run_toml jsonl verifier (default: all)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
secs=${1:-60}
targets=${2:-"gguf safetensors tokenizer_json config_json run_toml jsonl verifier"}
out="$root/build/fuzz"
command -v clang++ >/dev/null || { echo "run_fuzz.sh: clang++ not found (apt-get install clang)" >&2; exit 1; }
mkdir -p "$out/crashes" "$out/obj"
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
       -I"$root/src" -I"$root")
s="$root/src"
srcs=("$s/io/gguf.cpp" "$s/io/dtype.cpp" "$s/io/safetensors.cpp" "$s/io/json_util.cpp" "$s/core/shape.cpp"
      "$s/io/atomic_file.cpp" "$s/io/token_data.cpp" "$s/model/config.cpp" "$s/rl/config.cpp" "$s/rl/config_keys.cpp" "$s/rl/data.cpp"
      "$s/rl/journal.cpp" "$s/rl/reward.cpp" "$s"/tokenizer/*.cpp)
objs=()
for src in "${srcs[@]}"; do  # each library source once, reused by every target
  o="$out/obj/$(echo "${src#"$s"/}" | tr / _).o"
  [ "$o" -nt "$src" ] || clang++ "${flags[@]}" -c "$src" -o "$o"
  objs+=("$o")
done
for t in $targets; do
  clang++ "${flags[@]}" -fsanitize=fuzzer "$root/tests/fuzz/fuzz_$t.cpp" "${objs[@]}" \
    -lpcre2-8 -lutf8proc -o "$out/fuzz_$t"
  mkdir -p "$out/corpus_$t"
  echo "== fuzz_$t for ${secs}s"
  if "$out/fuzz_$t" "$out/corpus_$t" "$root/tests/fuzz/corpus/$t" -max_total_time="$secs" -max_len=65536 \
      -timeout=10 -rss_limit_mb=4096 -artifact_prefix="$out/crashes/${t}_" -print_final_stats=1 \
      >"$out/fuzz_$t.log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|new_units_added)' "$out/fuzz_$t.log"
  else
    findings=$((${findings:-0} + 1))
    grep -E 'ERROR: |SUMMARY|Test unit written' "$out/fuzz_$t.log"
    echo "fuzz_$t: a finding (log: $out/fuzz_$t.log)"
  fi
done
[ "${findings:-0}" = 0 ] || { echo "run_fuzz.sh: $findings target(s) found something"; exit 1; }
