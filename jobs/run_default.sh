#!/usr/bin/env bash
# The main job on the embedded default: sets up, builds, and trains a small Qwen3-style model on the
# built-in arithmetic task on CPU with BuPO (configs/default.toml): a short supervised warm start,
# 5 steps of BuPO phase 1 on pi^2, then GRPO. Writes out/default/{diagnostics.h5, metrics.jsonl,
# checkpoints/, hf/} and the training figures (out/default/*.png). Extra arguments go to
# `bupo train`, e.g. --set trainer.steps=100.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash env/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" >/dev/null
build/release/bupo train --config configs/default.toml --overwrite "$@"
.venv/bin/python analysis/plot_training.py out/default/diagnostics.h5 --out out/default
