#!/usr/bin/env bash
# ZeRO-1 checkpoints are consolidated (ctest: mpi.zero_resume). On PP=2 × DP=2 with the optimizer
# state sharded in small buckets:
#   1. 2 steps, then --resume to 4 on the same layout: metrics (timings aside) and final weights
#      byte-identical to an uninterrupted 4-step run;
#   2. the step-2 checkpoint resumed on one process without ZeRO: the same metrics to 1e-6.
#   check_zero_resume.sh MPIRUN BUPO PYTHON [mpirun flags...]
set -uo pipefail
mpirun=$1 bupo=$2 python=$3
shift 3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
source "$(dirname "${BASH_SOURCE[0]}")/tiny_run.sh"
zero=$'dp = 2\nzero = 1\ngrad_bucket_mb = 0.004\ntimeout_s = 120'
tiny_run_config "$dir/full.toml" "$dir/full" 4 "$zero"
tiny_run_config "$dir/part.toml" "$dir/part" 2 "$zero"
tiny_run_config "$dir/one.toml" "$dir/one" 2 "$zero"
run() {  # label, then the command
  local label=$1
  shift
  "$@" >"$dir/$label.log" 2>&1 || { cat "$dir/$label.log"; echo "FAIL: $label exited $?"; exit 1; }
}
run full "$mpirun" "$@" -np 4 "$bupo" train -c "$dir/full.toml" -q
run part "$mpirun" "$@" -np 4 "$bupo" train -c "$dir/part.toml" -q
cp -r "$dir/part" "$dir/one"  # the same step-2 checkpoint, to resume on one process
rm -rf "$dir/one/hf"
run part_resume "$mpirun" "$@" -np 4 "$bupo" train -c "$dir/part.toml" -q --resume \
  --set trainer.steps=4
run one_resume "$bupo" train -c "$dir/one.toml" -q --resume --allow-config-change \
  --set trainer.steps=4 --set parallel.pp=1 --set parallel.dp=1 --set parallel.zero=0
cmp "$dir/full/hf/model.safetensors" "$dir/part/hf/model.safetensors" ||
  { echo "FAIL: the resumed ZeRO-1 run's weights differ from the uninterrupted run's"; exit 1; }
"$python" - "$dir" <<'PY' || exit 1
import json, math, sys
d = sys.argv[1]
def metrics(run):
    return [json.loads(l) for l in open(f"{d}/{run}/metrics.jsonl") if l.strip()]
def numbers(m):
    return {k: v for k, v in m.items()
            if isinstance(v, (int, float)) and not k.startswith(("time_", "comm_", "pp_"))}  # timings, layout
full, part, one = metrics("full"), metrics("part"), metrics("one")
assert len(full) == len(part) == len(one) == 4, (len(full), len(part), len(one))
for s, (a, b, c) in enumerate(zip(full, part, one), 1):
    a, b, c = numbers(a), numbers(b), numbers(c)
    diff = [k for k in a if not (a[k] == b.get(k) or (math.isnan(a[k]) and math.isnan(b[k])))]
    assert not diff, f"step {s}: same-layout resume differs in {diff}"
    for k, v in a.items():
        w = c[k]
        ok = (math.isnan(v) and math.isnan(w)) or abs(v - w) <= 1e-6 * max(1.0, abs(v))
        assert ok, f"step {s}: {k} = {v} (ZeRO-1, 4 ranks) vs {w} (resumed on 1 rank)"
print("check_zero_resume: same-layout resume bit-identical; 1-rank resume within 1e-6")
PY
