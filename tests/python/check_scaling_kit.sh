#!/usr/bin/env bash
# The scaling-study kit end to end on a tiny model (ctest: python.scaling_kit): jobs/scaling/sweep.py
# runs a pp × dp grid locally, skips what cannot run (dp not dividing m) and records a layout bupo
# refuses (tp=3) as FAILED without retrying it; a re-run skips the finished points; each point's
# parameters are attributes of its diagnostics.h5; analysis/scaling.py reads the folder, its
# bubble bound is (p-1)/(m'+p-1) with m' = m/dp per replica, DP traffic appears only where dp > 1,
# and the figures are written.
#   check_scaling_kit.sh BUPO MPIRUN PYTHON
set -uo pipefail
bupo=$1 mpirun=$2 python=$3
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
"$python" -c "import h5py, matplotlib" 2>/dev/null || { echo "skip: h5py/matplotlib missing"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
source "$root/tests/mpi/tiny_run.sh"
tiny_run_config "$dir/tiny.toml" "$dir/unused" 2 ""
sed -i 's/^pp = 2$//' "$dir/tiny.toml"
sweep=("$python" "$root/jobs/scaling/sweep.py" --study "$dir/study" --config "$dir/tiny.toml"
       --bupo "$bupo" --mpirun "$mpirun" --steps 3)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"${sweep[@]}" --pp 1,2 --dp 1,2 --micro 1,2 >"$dir/first.log" 2>&1 ||
  { cat "$dir/first.log"; echo "FAIL: the sweep exited $?"; exit 1; }
grep -q "skip tp=1 pp=1 dp=2 m=1" "$dir/first.log" ||
  { cat "$dir/first.log"; echo "FAIL: dp=2, m=1 was not skipped"; exit 1; }
grep -q "sweep: 6 ran" "$dir/first.log" || { cat "$dir/first.log"; echo "FAIL: expected 6 points run"; exit 1; }
"${sweep[@]}" --pp 1,2 --dp 1,2 --micro 1,2 >"$dir/second.log" 2>&1
grep -q "sweep: 6 done (" "$dir/second.log" ||
  { cat "$dir/second.log"; echo "FAIL: expected the 6 finished points skipped"; exit 1; }
"${sweep[@]}" --tp 3 --micro 1 >"$dir/third.log" 2>&1
grep -q "does not divide" "$dir/third.log" && [ -s "$dir/study/tp3_pp1_dp1_m1_n1/FAILED" ] ||
  { cat "$dir/third.log"; echo "FAIL: tp=3 was not recorded as FAILED with bupo's reason"; exit 1; }
"${sweep[@]}" --tp 3 --micro 1 >"$dir/fourth.log" 2>&1
grep -q "sweep: 1 failed" "$dir/fourth.log" && ! grep -q "bupo exited" "$dir/fourth.log" ||
  { cat "$dir/fourth.log"; echo "FAIL: a FAILED point was retried"; exit 1; }
"$python" "$root/analysis/scaling.py" "$dir/study" --json "$dir/points.json" >"$dir/analysis.log" 2>&1 ||
  { cat "$dir/analysis.log"; echo "FAIL: analysis/scaling.py exited $?"; exit 1; }
"$python" - "$dir" <<'PY' || exit 1
import json, math, os, sys, h5py
d = sys.argv[1]
pts = {p["name"]: p for p in json.load(open(f"{d}/points.json"))}
assert len(pts) == 6, sorted(pts)
for name, p in pts.items():
    assert p["tokens_per_s"] > 0, name
    # gradients (tens of kB) over DP only where dp > 1 (a group of one still counts its few
    # metric reductions), activations over PP only where pp > 1
    assert (p["comm_dp_bytes"] > 1e4) == (p["dp"] > 1), (name, p["comm_dp_bytes"])
    assert (p["comm_dp_bytes"] < 1e3) == (p["dp"] == 1), (name, p["comm_dp_bytes"])
    assert (p["comm_pp_bytes"] > 0) == (p["pp"] > 1), (name, p["comm_pp_bytes"])
    if p["pp"] > 1:
        m = p["micro_batches"] // p["dp"]
        assert abs(p["bubble_1f1b"] - (p["pp"] - 1) / (m + p["pp"] - 1)) < 1e-9, (name, p["bubble_1f1b"])
        assert 0 <= p["bubble_measured"] < 1, (name, p["bubble_measured"])
    with h5py.File(f"{d}/study/{name}/run/diagnostics.h5", "r") as f:
        assert f.attrs["study_pp"] == p["pp"] and f.attrs["study_dp"] == p["dp"], name
        assert json.loads(f.attrs["study_point"])["micro_batches"] == p["micro_batches"], name
base = pts["tp1_pp1_dp1_m1_n1"]
assert base["efficiency"] == 1.0
for fig in ("scaling_strong.png", "scaling_stages.png", "scaling_bubble.png"):
    assert os.path.getsize(f"{d}/study/{fig}") > 1000, fig
print("check_scaling_kit: 6 points, skip and failure handling, attributes, analysis and figures: OK")
PY
