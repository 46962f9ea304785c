#!/usr/bin/env bash
# `bupo entropy` over MPI layouts against one process (ctest: mpi.entropy_layouts): data-parallel
# replicas take the batches in turn and send their rows to the writer, so dp = 2 must give the
# one-process file exactly; tp and pp (and tp x dp, tp x pp) within 1e-5 — the Fig. 5/12 geometry
# too (H^L and pi_theta sent from the last stage, the expectation E-bar summed over vocab shards).
#   check_entropy_layouts.sh MPIRUN BUPO PYTHON [mpirun flags...]
set -uo pipefail
mpirun=$1 bupo=$2 py=$3
shift 3
"$py" -c 'import h5py' 2>/dev/null || { echo "h5py not installed (env/setup.sh): skipped"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$bupo" init-model --out "$dir/m" --layers 4 --heads 4 --kv-heads 2 --vocab 256 --sample-data "$dir/rows.jsonl" \
  --records 9 --length 24 >/dev/null || { echo "FAIL: init-model"; exit 1; }
run() {  # run NAME NP ARGS...
  local name=$1 np=$2
  shift 2
  if [ "$np" = 1 ]; then
    "$bupo" entropy --model "$dir/m" --data "$dir/rows.jsonl" --out "$dir/$name.h5" --batch-tokens 48 "$@"
  else
    "$mpirun" "${flags[@]}" -np "$np" "$bupo" entropy --model "$dir/m" --data "$dir/rows.jsonl" \
      --out "$dir/$name.h5" --batch-tokens 48 "$@"
  fi >"$dir/$name.out" 2>&1 || { cat "$dir/$name.out"; echo "FAIL: $name exited non-zero"; exit 1; }
}
flags=("$@")
run one 1
run dp2 2
run dp3 3
run pp2 2 --pp 2
run tp2dp2 4 --tp 2
run tp2pp2 4 --tp 2 --pp 2
"$py" - "$dir" <<'PY'
import sys, h5py, numpy as np
d = sys.argv[1]
one = h5py.File(f"{d}/one.h5", "r")
n = int(one["progress"][0])
assert n == int(one.attrs["num_tokens"]) > 0
sets = [k for k in ("tokens/record", "tokens/position", "tokens/token_id")] + \
       [f"{g}/{m}" for g in ("entropy", "logprob") for m in ("layer", "attn_in", "attn_out", "ffn_in", "ffn_out", "output")] + \
       ["geometry/cos_to_top", "kl/layer_to_output", "geometry/cos_attn_residual", "geometry/cos_ffn_residual"]
for name, exact in (("dp2", True), ("dp3", True), ("pp2", False), ("tp2dp2", False), ("tp2pp2", False)):
    f = h5py.File(f"{d}/{name}.h5", "r")
    assert list(f["progress"][:]) == list(one["progress"][:]), (name, f["progress"][:])
    for s in sets:
        a, b = one[s][:], f[s][:]
        ok = np.array_equal(a, b) if exact or s.startswith("tokens") else np.allclose(a, b, rtol=1e-5, atol=1e-5 if s.startswith("kl") else 1e-6)
        assert ok, f"{name}: {s} differs (max |diff| {np.abs(a.astype(float) - b.astype(float)).max()})"
    print(f"{name}: equal to one process ({'bit for bit' if exact else '1e-5'}) over {n} rows")
PY
