#!/usr/bin/env python3
"""Hugging Face side of the issue-3 benchmarks, on the same inputs as tests/bench/bench_models.cpp:
HF `tokenizers` (Rust) encoding the MATH500 problems with the Qwen3 tokenizer.json, and
transformers (PyTorch, fp32, 2 threads) on SmolLM2-135M-Instruct loaded from the same GGUF:
prefill of the first greedy-reference prompt and 64 greedy decode tokens.
Prints JSON. Run: .venv-ref/bin/python tests/bench/bench_reference.py"""
import json
import os
import time

import torch
from tokenizers import Tokenizer

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../..")
shared = os.path.join(root, "../shared")
texts = [json.loads(l)["prompt"][-1]["content"] for l in open(os.path.join(shared, "data/math/math500.jsonl"))]
tok = Tokenizer.from_file(os.path.join(shared, "tokenizers/qwen3/tokenizer.json"))
res = {}
for batch in (False, True):
    best = 1e9
    for _ in range(5):
        t0 = time.perf_counter()
        if batch:
            enc = tok.encode_batch(texts, add_special_tokens=False)
        else:
            enc = [tok.encode(t, add_special_tokens=False) for t in texts]
        best = min(best, time.perf_counter() - t0)
    n = sum(len(e.ids) for e in enc)
    res["hf_tokenizers_batch" if batch else "hf_tokenizers_loop"] = {
        "seconds": best, "tokens_per_s": n / best, "bytes_per_s": sum(len(t.encode()) for t in texts) / best}

from transformers import AutoModelForCausalLM
torch.set_num_threads(2)
gguf = os.path.join(root, "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
model = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf),
                                             torch_dtype=torch.float32).eval()
ref = json.load(open(os.path.join(root, "tests/reference/golden/smollm2_reference.json")))
ids = torch.tensor([ref["greedy"][0]["ids"]])
with torch.no_grad():
    model(ids)
    best = 1e9
    for _ in range(5):
        t0 = time.perf_counter(); model(ids); best = min(best, time.perf_counter() - t0)
    res["torch_prefill"] = {"tokens": ids.shape[1], "seconds": best, "tokens_per_s": ids.shape[1] / best}
    best = 1e9
    for _ in range(3):
        t0 = time.perf_counter()
        out = model.generate(ids, do_sample=False, max_new_tokens=64, min_new_tokens=64, pad_token_id=2)
        best = min(best, time.perf_counter() - t0)
    new = out.shape[1] - ids.shape[1]
    res["torch_generate"] = {"new_tokens": new, "seconds": best,
                             "decode_tokens_per_s": new / max(best - res["torch_prefill"]["seconds"], 1e-9)}
res["torch"] = torch.__version__
print(json.dumps(res, indent=1))
