#!/usr/bin/env python3
"""Training forward + backward, bupo against PyTorch, on one machine, interleaved.

    .venv-ref/bin/python tests/bench/train_step_vs_pytorch.py [BUILD] [--reps 3] [--threads 2]

The workload of issue 16's first row: SmolLM2-135M-Instruct (the GGUF of env/setup.sh, dequantized
to fp32 by both sides), 8 sequences x 256 tokens with the ids of bench_models.cpp's train_id,
loss = -mean log p(x_{t+1}) over the 8 x 255 next-token targets, forward + backward into every
parameter. bupo: BM_SmolLM2TrainStep of BUILD/tests/bupo_bench_models (3 iterations per run);
PyTorch: transformers' LlamaForCausalLM, logits + cross-entropy + backward, torch.set_num_threads.
Each side runs --reps times alternately; the minimum of each is kept. Prints a Markdown table with
the ratio PyTorch/bupo (> 1: bupo is faster), both losses and the machine's ISA and load.
Needs .venv-ref (bash env/setup-reference.sh).
"""
import argparse
import json
import os
import pathlib
import subprocess
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
GGUF = ROOT / "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
S, T = 8, 256


def bupo_run(build):
    out = subprocess.run(
        [str(pathlib.Path(build) / "tests/bupo_bench_models"),
         "--benchmark_filter=BM_SmolLM2TrainStep", "--benchmark_format=json"],
        check=True, capture_output=True, text=True).stdout
    b = json.loads(out)["benchmarks"][0]
    if b.get("error_occurred"):
        raise SystemExit(f"bupo_bench_models: {b.get('error_message')}")
    return b["real_time"] / 1e3, b["loss"], b["lens_s"]


def torch_side(threads):
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(GGUF.parent, gguf_file=GGUF.name,
                                                 torch_dtype=torch.float32)
    model.train()
    V = model.config.vocab_size
    ids = torch.tensor([[(t * 7919 + s * 104729 + 17) % V for t in range(T)] for s in range(S)])

    def step():
        model.zero_grad(set_to_none=False)
        t0 = time.perf_counter()
        logits = model(ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
        loss.backward()
        return time.perf_counter() - t0, loss.item()
    step()  # warm-up
    return step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default=str(ROOT / "build/cpu-release"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    torch_step = torch_side(a.threads)
    best_b, best_t, loss_b, loss_t, lens_b = 1e9, 1e9, None, None, None
    for _ in range(a.reps):
        tb, loss_b, lens = bupo_run(a.build)
        if tb < best_b:
            best_b, lens_b = tb, lens
        for _ in range(3):
            tt, loss_t = torch_step()
            best_t = min(best_t, tt)
    flags = next((l for l in open("/proc/cpuinfo") if l.startswith("flags")), "")
    isa = "AVX-512" if " avx512f" in flags else "AVX2+FMA" if " avx2" in flags else "SSE"
    print(f"machine: {os.cpu_count()} cores, {isa}, OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')}, load {open('/proc/loadavg').read().split()[:3]}")
    print("| workload | bupo | PyTorch | ratio PyTorch/bupo |")
    print("|---|---|---|---|")
    print(f"| SmolLM2-135M fwd+bwd, {S} x {T} tokens, {a.threads} threads | {best_b:.2f} s "
          f"(output lens {lens_b:.2f} s) | {best_t:.2f} s | {best_t / best_b:.2f} |")
    print(f"loss: bupo {loss_b:.6f}, PyTorch {loss_t:.6f}, |difference| {abs(loss_b - loss_t):.2e}")


if __name__ == "__main__":
    main()
