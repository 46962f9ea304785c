#!/usr/bin/env bash
# The measured pipeline bubble of `bupo train`'s 1F1B update against (p-1)/(m+p-1).
# Runs the default model with PP=P (one rank per stage) for 2 steps at m = 1, 2, 4, 8 micro-batches
# per mini-batch and prints, from step 2's metrics, the idle fraction of the stages during the
# update (pp_bubble_measured: receive-wait time over the wall time of the pipelined passes, summed
# over the ranks) next to the 1F1B bound (pp_bubble_1f1b).
#   bash jobs/bench_pipeline.sh [P=2]     (needs P free cores; mpirun from env/setup.sh)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
P=${1:-2}
bupo=${BUPO:-$root/build/release/bupo}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(--oversubscribe)
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
printf '%4s %4s %12s %12s %12s\n' p m measured 1f1b time_update
for m in 1 2 4 8; do
  OMP_NUM_THREADS=1 mpirun "${flags[@]}" -np "$P" "$bupo" train -c "$root/configs/default.toml" -q \
    --set parallel.pp="$P" --set warmup.sft_steps=0 --set trainer.steps=2 \
    --set validation.every=0 --set diagnostics.every=0 --set trainer.checkpoint_every=0 \
    --set trainer.export_hf=false --set trainer.micro_batch_seqs=$((128 / m)) \
    --set trainer.out_dir="\"$out/m$m\"" --overwrite
  "$root/.venv/bin/python" - "$out/m$m/metrics.jsonl" "$P" "$m" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
r = rows[-1]
print(f"{sys.argv[2]:>4} {sys.argv[3]:>4} {r['pp_bubble_measured']:12.3f} {r['pp_bubble_1f1b']:12.3f} {r['time_update']:12.3f}")
PY
done
