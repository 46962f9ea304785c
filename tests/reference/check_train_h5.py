#!/usr/bin/env python3
"""`bupo train` as users run it: the diagnostics file opens with h5py *while* the trainer writes it
and after; SIGTERM makes the trainer finish its step, checkpoint and exit 75; --resume continues;
bupo verify scores JSONL. Exit 77 = h5py not installed (skip).

usage: check_train_h5.py BUPO_BINARY WORKDIR
"""
import json
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
cfg = f"{work}/run.toml"
with open(cfg, "w") as f:
    f.write(f"""
[model]
template = "plain"
init = {{ layers = 3, hidden = 64, heads = 2, kv_heads = 1, head_dim = 32, ffn = 128 }}
[data]
train = "builtin:arithmetic"
arithmetic = {{ digits = 1, size = 200 }}
[rollout]
n = 4
max_tokens = 12
[trainer]
steps = 400
prompts_per_step = 8
mini_batch_prompts = 4
micro_batch_seqs = 16
out_dir = "{work}/run"
checkpoint_every = 1000
[bupo]
internal_layer = 2
internal_steps = 3
""")
# HDF5's file locking stays on (no HDF5_USE_FILE_LOCKING=FALSE): the trainer holds the file only
# while it flushes a step
env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
env.pop("HDF5_USE_FILE_LOCKING", None)
h5path = f"{work}/run/diagnostics.h5"
p = subprocess.Popen([bupo, "train", "-c", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)

# read while it trains: a SWMR reader always succeeds (the file appears whole, by rename); a plain
# reader succeeds except while a step is being flushed (then HDF5 says the file is open for write)
seen, swmr_reads, plain_reads, plain_busy = 0, 0, 0, 0
deadline = time.time() + 300  # generous: sanitizer builds under a parallel ctest
while time.time() < deadline and (seen < 3 or plain_reads < 3):
    time.sleep(0.05)
    if not os.path.exists(h5path):
        continue
    with h5py.File(h5path, "r", libver="latest", swmr=True) as f:
        n = len(f["steps/step"]) if "steps/step" in f else 0
        assert n >= seen, (n, seen)
        if n:
            assert list(f["steps/step"][:n]) == list(range(1, n + 1))
        seen = n
        swmr_reads += 1
    try:
        with h5py.File(h5path, "r") as f:
            if "steps/step" in f:
                f["steps/step"][:]
            plain_reads += 1
    except (OSError, BlockingIOError) as e:  # the moment of a flush
        plain_busy += 1
if seen < 3 or plain_reads < 3 or p.poll() is not None:
    p.kill()
    _, err = p.communicate()
    sys.exit(f"read {seen} steps while training (need 3), {plain_reads} plain reads; trainer exit "
             f"{p.returncode}: {err.decode()[-800:]}")
print(f"while training: {swmr_reads} SWMR reads all succeeded; {plain_reads} plain reads succeeded, "
      f"{plain_busy} met a flush")
p.send_signal(signal.SIGTERM)
_, err = p.communicate(timeout=60)
err = err.decode()
assert p.returncode == 75, f"exit {p.returncode}, expected 75 (preempted): {err[-500:]}"
assert "preempted" in err, err[-500:]
ck = open(f"{work}/run/checkpoints/latest").read().strip()
step = int(ck.split("_")[1])
assert os.path.exists(f"{work}/run/checkpoints/{ck}/COMPLETE")
with h5py.File(h5path, "r") as f:
    assert f.attrs["schema"] in ("bupo-train", b"bupo-train") and int(f.attrs["schema_version"]) == 1
    L = int(f.attrs["num_layers"])
    n = len(f["steps/step"])
    assert n == step, (n, step)
    assert list(f["steps/step"][:]) == list(range(1, n + 1))
    assert f["entropy/layer"].shape == (n, L + 1)
    assert list(f["steps/phase"][:3]) == [1, 1, 1] and all(f["steps/phase"][3:] == 2)
    assert np.all(np.isfinite(f["steps/reward"][:]))
print(f"h5py read {seen}+ steps while training; SIGTERM after step {step} -> exit 75 with {ck}")

# resume two more steps
r = subprocess.run([bupo, "train", "-c", cfg, "--resume", "--quiet", "--stop-after-step", str(step + 2)], env=env,
                   capture_output=True)
assert r.returncode == 0, r.stderr.decode()
with h5py.File(h5path, "r") as f:
    assert list(f["steps/step"][:]) == list(range(1, step + 3))
rows = [json.loads(l) for l in open(f"{work}/run/metrics.jsonl")]
assert [r["step"] for r in rows] == list(range(1, step + 3))
print(f"resumed to step {step + 2}")

# bupo verify
lines = "\n".join(json.dumps(x) for x in [{"response": "so \\boxed{\\dfrac{1}{2}}", "ground_truth": "0.5"},
                                            {"response": "\\boxed{3}", "ground_truth": "4"},
                                            {"response": "no box", "ground_truth": "4"}])
r = subprocess.run([bupo, "verify"], input=lines.encode(), capture_output=True)
assert r.returncode == 0, r.stderr
scores = [json.loads(l)["score"] for l in r.stdout.decode().splitlines()]
assert scores == [1.0, 0.0, 0.0], scores
r = subprocess.run([bupo, "verify"], input=b'{"response": 1}\n', capture_output=True)
assert r.returncode == 1 and b"stdin:1" in r.stderr, r.stderr
print("bupo verify ok")
