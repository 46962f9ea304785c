#!/usr/bin/env bash
# The CUDA backend's validation on one GPU machine (H100/H200), in one run of under 8 minutes:
#   1. configure and build the CUDA targets for this GPU (all its cores), stopping with a clear
#      message at the first build failure;
#   2. run every GPU test: the backend-ops cases on CUDA against the CPU backend, the NCCL
#      communicator, the model/generation/trainer checks in fp32 and bf16 (tests/gpu);
#   3. run the GPU benchmark (tests/bench/bench_cuda.cpp): training-step MFU, decode against the
#      HBM roofline, the fused lens against its GEMM, diagnostics' share, BuPO phase 1 over a step —
#      each a ratio to a bound measured in the same run;
#   4. print one table and write it, with the log and the raw results, to $OUT (or build/device_check).
#
# Usage:
#   tests/gpu/device_check.sh                 build here (needs env/debian-packages.txt's packages)
#   tests/gpu/device_check.sh --bundle DIR    on a build machine: build for sm_80+sm_90 and copy the
#                                             binaries and the non-CUDA shared libraries they need to
#                                             DIR, and pack them as DIR.tar.xz (~15 MB: carry that)
#   tests/gpu/device_check.sh --prebuilt DIR  on a GPU machine without the build dependencies: run
#                                             DIR's (or DIR.tar.xz's) binaries, CUDA libraries from
#                                             the machine
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mode=build
dir=""
case "${1:-}" in
  --bundle | --prebuilt) mode=${1#--}; dir=${2:?"$1 needs a folder"} ;;
  "") ;;
  *) echo "usage: $0 [--bundle DIR | --prebuilt DIR]" >&2; exit 2 ;;
esac
targets=(bupo_gpu_tests bupo_gpu_model_tests bupo_bench_cuda)
# on the GPU machine the whole check has 8 minutes; a bundle is built on a small machine
build_timeout=300
[ "$mode" = bundle ] && build_timeout=3600
t_start=$SECONDS
say() { printf '[device_check %4ds] %s\n' $((SECONDS - t_start)) "$*"; }
fail() { say "FAILED: $*"; exit 1; }

configure_and_build() {  # $1 build dir, $2 CUDA architectures
  local b=$1 archs=$2 jobs
  jobs=$(nproc)
  say "configure $b for sm_${archs//;/, sm_}"
  cmake -S "$root" -B "$b" -DCMAKE_BUILD_TYPE=Release -DBUPO_BUILD_BENCH=OFF \
    -DCMAKE_CUDA_ARCHITECTURES="$archs" >"$b.configure.log" 2>&1 ||
    { tail -30 "$b.configure.log"; fail "cmake configure (log: $b.configure.log): a dependency of env/debian-packages.txt is missing? or use --prebuilt"; }
  grep -q "bupo: CUDA" "$b.configure.log" || fail "cmake found no CUDA toolkit (nvcc) in $b"
  say "build ${targets[*]} with $jobs jobs"
  timeout "$build_timeout" cmake --build "$b" -j "$jobs" --target "${targets[@]}" >"$b.build.log" 2>&1 ||
    { grep -E "error|Error" "$b.build.log" | head -20; fail "build (log: $b.build.log)"; }
}

if [ "$mode" = bundle ]; then
  b="$root/build/gpu-bundle"
  mkdir -p "$b"
  configure_and_build "$b" "80;90"
  mkdir -p "$dir/bin" "$dir/lib"
  for t in "${targets[@]}"; do cp "$b/tests/$t" "$dir/bin/"; done
  # the shared libraries outside glibc and CUDA (these come from the GPU machine's driver/toolkit)
  for t in "${targets[@]}"; do ldd "$dir/bin/$t"; done | awk '/=> \//{print $3}' | sort -u |
    grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libstdc\+\+|libgcc_s)\.so|libcuda\.so|libcudart|libcublas|libcudnn|libnccl|libnvidia' |
    while read -r so; do cp -L "$so" "$dir/lib/"; done
  strip --strip-unneeded "$dir"/bin/* 2>/dev/null || true
  tar -cJf "$dir.tar.xz" -C "$(dirname "$dir")" "$(basename "$dir")" || fail "tar $dir.tar.xz"
  say "bundle in $dir: $(du -sh "$dir" | cut -f1) ($(ls "$dir/lib" | wc -l) libraries), packed $(du -sh "$dir.tar.xz" | cut -f1) in $dir.tar.xz"
  exit 0
fi

out=${OUT:-$root/build/device_check}
mkdir -p "$out"
exec > >(tee "$out/device_check.log") 2>&1
command -v nvidia-smi >/dev/null && nvidia-smi -L || say "nvidia-smi not found"
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
# DEVICE_CHECK_WITHOUT_GPU=1 walks the script on a machine without one (the tests then skip)
[ -n "$cap" ] || [ "${DEVICE_CHECK_WITHOUT_GPU:-0}" = 1 ] && cap=${cap:-90} ||
  fail "no GPU visible (nvidia-smi --query-gpu=compute_cap gave nothing)"

if [ "$mode" = prebuilt ]; then
  if [ ! -d "$dir" ] && [ -f "$dir.tar.xz" ]; then
    mkdir -p /tmp/bupo-prebuilt && tar -xJf "$dir.tar.xz" -C /tmp/bupo-prebuilt || fail "unpack $dir.tar.xz"
    dir=/tmp/bupo-prebuilt/$(basename "$dir")
  fi
  bin="$dir/bin"
  [ -x "$bin/bupo_gpu_tests" ] || fail "$bin/bupo_gpu_tests missing: make the bundle with --bundle first"
  # cuBLAS/cuDNN/NCCL from the toolkit or from the machine's Python wheels (nvidia-*)
  libs="$dir/lib"
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && libs="$libs:$d"; done
  py=$(command -v python3 || true)
  if [ -n "$py" ]; then
    nv=$("$py" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]) + "/nvidia")' 2>/dev/null || true)
    [ -n "$nv" ] && for d in "$nv"/*/lib; do libs="$libs:$d"; done
  fi
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  for t in "${targets[@]}"; do
    ldd "$bin/$t" | grep "not found" && fail "$t: shared libraries not found (above)"
  done
else
  b="$root/build/gpu-sm$cap"
  mkdir -p "$b"
  configure_and_build "$b" "$cap"
  bin="$b/tests"
fi
say "built/found in $((SECONDS - t_start)) s"

# ---- the GPU tests
declare -a names results times
run_test() {  # name, command...
  local name=$1 t0=$SECONDS rc
  shift
  say "run $name"
  timeout 240 "$@" >"$out/$name.txt" 2>&1
  rc=$?
  tail -40 "$out/$name.txt"
  names+=("$name")
  times+=($((SECONDS - t0)))
  case $rc in
    0) results+=("passed") ;;
    77) results+=("SKIPPED (no GPU seen)") ;;
    124) results+=("TIMEOUT") ;;
    *) results+=("FAILED (rc $rc)") ;;
  esac
}
run_test backend_ops "$bin/bupo_gpu_tests" --gtest_output="xml:$out/backend_ops.xml"
run_test model_vs_cpu "$bin/bupo_gpu_model_tests" --gtest_output="xml:$out/model_vs_cpu.xml"
run_test bench "$bin/bupo_bench_cuda" --json "$out/bench.json"

# ---- one table
{
  echo "## device_check $(date -u +%Y-%m-%dT%H:%MZ) on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
  echo
  echo "| check | result | seconds |"
  echo "| --- | --- | --- |"
  for i in "${!names[@]}"; do echo "| ${names[$i]} | ${results[$i]} | ${times[$i]} |"; done
  for x in backend_ops model_vs_cpu; do
    grep -E "^\[  FAILED  \] [A-Za-z]" "$out/$x.txt" | sort -u | sed 's/^\[  FAILED  \] /| failed: /; s/$/ | | |/'
  done
  echo
  echo '```'
  sed -n '/^figure/,$p' "$out/bench.txt"
  grep -E "^\[(fp32|bf16)\]|NCCL all-reduce" "$out/model_vs_cpu.txt" "$out/backend_ops.txt" | sed 's/^[^:]*://'
  echo '```'
  echo
  echo "total $((SECONDS - t_start)) s"
} >"$out/device_check.md"
cat "$out/device_check.md"
for r in "${results[@]}"; do [ "$r" = passed ] || exit 1; done
exit 0
