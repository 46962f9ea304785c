#!/usr/bin/env python3
"""Before/after benchmarks of two builds of bupo on this machine, in one run, interleaved.

    tests/bench/compare_revisions.py BASE_BUILD NEW_BUILD [--reps 3] [--quick]

BASE_BUILD and NEW_BUILD are CMake build folders (e.g. a worktree of the previous commit built
with the same preset, and build/cpu-release). For every workload both builds run alternately
`--reps` times; the minimum time of each is kept (the least disturbed run) and the ratio
base/new is printed (>= 1: the new build is at least as fast). Workloads:

  * Google Benchmark rows of tests/bupo_bench (GEMM, attention, lens chunk, decoder layer
    forward + backward) and tests/bupo_bench_models (SmolLM2 prefill and decode tokens/s; skipped
    without models/smollm2 from env/setup.sh);
  * the default job's step time: `bupo train` on configs/default.toml with a shortened warm start,
    mean time_step of steps 2..N from metrics.jsonl.

Prints a Markdown table (the one in docs/benchmarks.md) and the machine's ISA and load.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def cpu_facts():
    flags, model = "", "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags") and not flags:
            flags = line
        if line.startswith("model name") and model == "?":
            model = line.split(":", 1)[1].strip()
    isa = "AVX-512" if " avx512f" in flags else "AVX2+FMA" if " avx2" in flags else "SSE"
    load = open("/proc/loadavg").read().split()[:3]
    return model, isa, os.cpu_count(), load


def gbench(binary, filt, min_time):
    out = subprocess.run(
        [str(binary), f"--benchmark_filter={filt}", "--benchmark_format=json",
         f"--benchmark_min_time={min_time}"],
        check=True, capture_output=True, text=True).stdout
    rows = {}
    if not out.strip():
        return rows
    for b in json.loads(out)["benchmarks"]:
        if b.get("error_occurred"):
            continue
        name = b["name"].split("/real_time")[0].replace("/manual_time", "")
        rows[name] = b["real_time"] * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
    return rows


def train_step_time(bupo, steps, sft_steps):
    with tempfile.TemporaryDirectory() as d:
        cmd = [str(bupo), "train", "--config", str(ROOT / "configs/default.toml"), "--quiet",
               "--set", f'trainer.out_dir="{d}"', "--set", f"trainer.steps={steps}",
               "--set", f"warmup.sft_steps={sft_steps}", "--set", "trainer.checkpoint_every=0",
               "--set", "trainer.export_hf=false", "--set", "validation.every=0"]
        subprocess.run(cmd, check=True, capture_output=True)
        ts = [json.loads(l)["time_step"] for l in open(pathlib.Path(d) / "metrics.jsonl") if l.strip()]
    return sum(ts[1:]) / len(ts[1:])  # step 1 included first-touch effects in old builds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("new")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="shorter benchmark and training runs")
    ap.add_argument("--filter", default="", help="only the Google Benchmark rows matching this regex "
                    "(no training run)")
    a = ap.parse_args()
    base, new = pathlib.Path(a.base), pathlib.Path(a.new)
    min_time = "0.3" if a.quick else "1.0"
    kernels = a.filter or "BM_Gemm|BM_Attention|BM_LensChunk|BM_DecoderLayer"
    best = {}  # (workload) -> [base_min, new_min]

    def keep(rows, side):
        for k, v in rows.items():
            best.setdefault(k, [float("inf"), float("inf")])
            best[k][side] = min(best[k][side], v)

    have_models = (ROOT / "models/smollm2").exists()
    for rep in range(a.reps):
        for side, build in ((0, base), (1, new)) if rep % 2 == 0 else ((1, new), (0, base)):
            keep(gbench(build / "tests/bupo_bench", kernels, min_time), side)
            models = a.filter or "BM_SmolLM2Prefill|BM_SmolLM2Decode"
            if have_models and "SmolLM2" in models:
                keep(gbench(build / "tests/bupo_bench_models", models, min_time), side)
            if not a.filter:
                steps = 6 if a.quick else 12
                keep({"default job: mean step time": train_step_time(build / "bupo", steps, 60)},
                     side)
        print(f"rep {rep + 1}/{a.reps} done", file=sys.stderr)

    model, isa, cores, load = cpu_facts()
    print(f"Machine: {model}, {isa}, {cores} cores, load average {' '.join(load)} at the end; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}; "
          f"{a.reps} interleaved repetitions, minimum of each.\n")
    print("| workload | before | after | ratio before/after |")
    print("|---|---|---|---|")
    worst = float("inf")
    for k in sorted(best):
        b, n = best[k]
        if b == float("inf") or n == float("inf"):
            continue
        r = b / n
        worst = min(worst, r)
        print(f"| {k} | {b * 1e3:.2f} ms | {n * 1e3:.2f} ms | {r:.3f} |")
    print(f"\nlowest ratio: {worst:.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()
