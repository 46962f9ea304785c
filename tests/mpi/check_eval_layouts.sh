#!/usr/bin/env bash
# `bupo eval` over MPI layouts against one process (ctest: mpi.eval_layouts): data-parallel
# replicas score contiguous shares of the prompts with the prompts' own random keys, so dp = 2, 3
# must give the one-process counts exactly; tp and pp change the logits' rounding (1e-7), which a
# sampled token follows only when its uniform number lands that close to a boundary, so their
# counts must be equal too. The model is warm-started until it is right part of the time.
#   check_eval_layouts.sh MPIRUN BUPO PYTHON [mpirun flags...]
set -uo pipefail
mpirun=$1 bupo=$2 py=$3
shift 3
flags=("$@")
"$py" -c 'import h5py' 2>/dev/null || { echo "h5py not installed (env/setup.sh): skipped"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/run.toml" <<TOML
[model]
template = "plain"
init = { arch = "qwen3", layers = 2, hidden = 32, heads = 2, kv_heads = 1, head_dim = 16, ffn = 64, vocab_multiple = 8, seed = 3 }
[data]
train = "builtin:arithmetic"
arithmetic = { digits = 1, ops = "+", size = 100 }
[warmup]
sft_steps = 200
sft_batch = 16
sft_lr = 3e-3
[rollout]
n = 2
max_tokens = 12
[trainer]
steps = 1
prompts_per_step = 2
mini_batch_prompts = 2
micro_batch_seqs = 4
checkpoint_every = 1
export_hf = false
out_dir = "$dir/run"
[diagnostics]
every = 0
TOML
"$bupo" train -c "$dir/run.toml" -q >"$dir/train.out" 2>&1 || { cat "$dir/train.out"; echo "FAIL: the tiny run"; exit 1; }
ck=$dir/run/checkpoints/step_00000001
run() {  # run NAME NP ARGS...
  local name=$1 np=$2
  shift 2
  local cmd=("$bupo" eval --model "$ck" --out "$dir/$name.h5" --sets builtin:arithmetic --n 4
             --k 1 2 4 --max-prompts 15 -q "$@")
  if [ "$np" = 1 ]; then "${cmd[@]}"; else "$mpirun" "${flags[@]}" -np "$np" "${cmd[@]}"; fi \
    >"$dir/$name.out" 2>&1 || { cat "$dir/$name.out"; echo "FAIL: $name exited non-zero"; exit 1; }
}
run one 1
run dp2 2
run dp3 3
run tp2 2 --tp 2
run pp2 2 --pp 2
run tp2pp2 4 --tp 2 --pp 2
"$py" - "$dir" <<'PY'
import sys, h5py, numpy as np
d = sys.argv[1]
one = h5py.File(f"{d}/one.h5", "r")
g = "validation/arithmetic"
c1 = one[f"{g}/correct"][:]
avg = float(one[f"{g}/avg"][0])
assert c1.shape == (1, 15) and 0 < avg < 1, (c1, avg)
for name in ("dp2", "dp3", "tp2", "pp2", "tp2pp2"):
    f = h5py.File(f"{d}/{name}.h5", "r")
    assert int(f.attrs["complete"]) == 1, name
    assert np.array_equal(f[f"{g}/correct"][:], c1), (name, f[f"{g}/correct"][:], c1)
    assert np.array_equal(f[f"{g}/pass_at_k"][:], one[f"{g}/pass_at_k"][:]), name
    print(f"{name}: the same counts per prompt as one process (avg@4 {avg:.4f})")
PY
# the analysis script reads the files (and prints the 95% interval from the counts)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
"$py" "$root/analysis/plot_eval.py" "$dir/one.h5" "$dir/dp2.h5" --no-plot >"$dir/plot.out" 2>&1 &&
  grep -Eq "^ +1 +4 +1 +0\.[0-9]{4} +0\.[0-9]{4} " "$dir/plot.out" ||
  { cat "$dir/plot.out"; echo "FAIL: analysis/plot_eval.py"; exit 1; }
cat "$dir/plot.out"
