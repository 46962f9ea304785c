#!/usr/bin/env bash
# Creates .venv-ref with PyTorch + transformers, used only to regenerate the golden data:
#   bash env/setup-reference.sh && .venv-ref/bin/python tests/reference/make_golden.py
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv-ref"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c 'import torch, transformers, safetensors' 2>/dev/null ||
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/env/reference-requirements.txt"
