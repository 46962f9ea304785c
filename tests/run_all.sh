#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite:
#   1. the `ci` preset (release, warnings as errors, CUDA targets compiled when nvcc is present):
#      unit, reference (PyTorch golden data), MPI (mpirun --oversubscribe), h5py, GPU (skipped
#      without a GPU) tests;
#   2. the `debug` preset (AddressSanitizer + UBSan, CPU only): the same suite again.
# Options: --fast skips the sanitizer build.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash env/setup.sh
jobs=$(nproc)
presets=(ci debug)
[ "${1:-}" = "--fast" ] && presets=(ci)
for p in "${presets[@]}"; do
  echo "== preset $p: configure + build"
  cmake --preset "$p" -DPython3_EXECUTABLE="$root/.venv/bin/python" >/dev/null
  cmake --build --preset "$p" -j "$jobs"
  echo "== preset $p: ctest"
  ctest --preset "$p" -j "$jobs"
done
