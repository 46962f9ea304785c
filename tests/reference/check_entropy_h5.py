#!/usr/bin/env python3
"""Reads a `bupo entropy` file with h5py (what users analyse with): schema, shapes, attributes,
bounds, and that a killed writer's flushed rows stay readable. Exit 77 = h5py not installed (skip).

usage: check_entropy_h5.py BUPO_BINARY WORKDIR
"""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

try:
    import h5py
    import numpy as np
except ImportError:
    print("h5py/numpy not installed: run env/setup.sh (skipped)")
    sys.exit(77)

bupo, work = sys.argv[1], sys.argv[2]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
model, data, out = f"{work}/model", f"{work}/data.jsonl", f"{work}/e.h5"
subprocess.run([bupo, "init-model", "--out", model, "--layers", "3", "--vocab", "256", "--sample-data", data,
                "--records", "5", "--length", "30"], check=True, stdout=subprocess.DEVNULL)
subprocess.run([bupo, "entropy", "--model", model, "--data", data, "--out", out], check=True,
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
rows = [json.loads(l) for l in open(data)]
N = sum(len(r["ids"]) - r["response_start"] for r in rows)
with h5py.File(out, "r") as f:
    L = int(f.attrs["num_layers"])
    assert L == 3 and int(f.attrs["vocab_size"]) == 256, dict(f.attrs)
    assert f.attrs["lens"] in ("raw", b"raw") and int(f.attrs["schema_version"]) == 3
    assert int(f.attrs["geometry"]) == 1
    assert list(f["progress"][:]) == [N, len(rows)] and int(f.attrs["num_tokens"]) == N
    assert f["entropy/layer"].shape == (N, L + 1), f["entropy/layer"].shape
    for m in ("attn_in", "attn_out", "ffn_in", "ffn_out"):
        assert f[f"entropy/{m}"].shape == (N, L) and f[f"logprob/{m}"].shape == (N, L)
    assert f["entropy/output"].shape == (N,) and f["tokens/token_id"].shape == (N,)
    ent = f["entropy/layer"][:]
    assert np.all(ent >= 0) and np.all(ent <= math.log(256) + 1e-5)
    assert np.all(f["logprob/output"][:] <= 0)
    # Fig. 5/12's geometry: cosines in [-1, 1], cos(H^L, H^L) = 1, KL >= 0 (up to fp32 rounding)
    cos_top, kl = f["geometry/cos_to_top"][:], f["kl/layer_to_output"][:]
    assert cos_top.shape == (N, L + 1) and kl.shape == (N, L + 1), (cos_top.shape, kl.shape)
    for ds in ("geometry/cos_attn_residual", "geometry/cos_ffn_residual"):
        c = f[ds][:]
        assert c.shape == (N, L) and np.all(np.abs(c) <= 1 + 1e-6), ds
    assert np.all(np.abs(cos_top) <= 1 + 1e-6) and np.allclose(cos_top[:, L], 1, atol=1e-6)
    assert np.all(kl >= -1e-4), kl.min()
    assert f["kl/layer_to_output"].attrs["description"], dict(f["kl/layer_to_output"].attrs)
    rec, pos, tok = f["tokens/record"][:], f["tokens/position"][:], f["tokens/token_id"][:]
    for i in (0, N - 1):
        assert tok[i] == rows[rec[i]]["ids"][pos[i]]
    print(f"h5py read {N} rows x {L + 1} layers; mean H(H^0)={ent[:, 0].mean():.3f} nats")

# A writer killed mid-run leaves the rows it committed readable (ecosystem.md §2.2): the fault
# injection hook SIGKILLs bupo right after its 3rd committed batch. The datasets have their full
# size from the start; /progress = [rows written, records written].
killed = f"{work}/killed.h5"
env = dict(os.environ, BUPO_FAULT_KILL_AFTER_BATCHES="3")
p = subprocess.run([bupo, "entropy", "--model", model, "--data", data, "--out", killed, "--batch-tokens", "30"],
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
assert p.returncode == -signal.SIGKILL, p.returncode
with h5py.File(killed, "r") as f, h5py.File(out, "r") as whole:
    n, recs = (int(v) for v in f["progress"][:])
    assert n == 3 * 20 and recs == 3 and n < int(f.attrs["num_tokens"]), (n, recs, dict(f.attrs))
    assert f["entropy/layer"].shape == (N, L + 1) and f["logprob/ffn_out"].shape == (N, L)
    assert np.all(f["entropy/layer"][:n] > 0)
    for ds in ("tokens/record", "tokens/token_id"):
        assert np.array_equal(f[ds][:n], whole[ds][:n]), ds
    for ds in ("entropy/layer", "logprob/ffn_out"):  # other batch sizes: equal up to BLAS blocking
        assert np.allclose(f[ds][:n], whole[ds][:n], rtol=1e-5, atol=1e-6), ds
print(f"killed writer: {n} committed rows readable (progress = [{n}, {recs}] of {N} rows)")
print("OK")
