#!/usr/bin/env bash
# The entropy analysis on a random model: sets up, builds, generates a small Qwen3-style model and
# token data, measures every layer's and module's internal-policy entropy into HDF5
# (out/default/entropy.h5), prints the per-layer table and writes the entropy-flow figures.
# (The main job is jobs/run_default.sh: `bupo train` on the embedded default.)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash env/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)" >/dev/null
bupo=build/release/bupo
model=models/tiny-qwen3
out=out/default
mkdir -p "$out"
if [ ! -f "$model/config.json" ]; then
  "$bupo" init-model --out "$model" --arch qwen3 --layers 8 --hidden 256 --heads 8 --kv-heads 4 --head-dim 32 \
    --ffn 768 --vocab 4096 --seed 1 --sample-data "$model/sample.jsonl" --records 32 --length 128
fi
"$bupo" entropy --model "$model" --data "$model/sample.jsonl" --out "$out/tiny-qwen3.h5" --lens raw --overwrite
.venv/bin/python analysis/plot_entropy.py "$out/tiny-qwen3.h5" --out "$out"
