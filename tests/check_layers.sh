#!/usr/bin/env bash
# The layering rule of docs/architecture.md: code above the backend contract never includes a
# device's kernels (backend/cpu, backend/cuda). Exceptions: the backends themselves, the CLI's
# main.cpp (registers the CUDA backend) and the NCCL communicator (parallel/, CUDA-only target).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bad=$(grep -rnE '#include "backend/(cpu|cuda)/' src parallel |
      grep -vE '^src/backend/' |
      grep -vE '^src/cli/main\.cpp:.*backend/cuda/cuda_backend\.hpp' |
      grep -vE '^parallel/nccl_comm\.cpp:.*backend/cuda/cuda_check\.cuh' || true)
if [ -n "$bad" ]; then
  echo "files above the backend contract include device kernels:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "layering: ok (no device kernel headers above src/backend)"
