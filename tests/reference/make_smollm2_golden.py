#!/usr/bin/env python3
"""Reference data for SmolLM2-135M-Instruct (the bundled GGUF, models/smollm2/*.gguf), made with
Hugging Face transformers loading the same GGUF file (dequantised to fp32 by the gguf package):
  golden/smollm2_reference.json: tokenizations of MATH500 problems and edge-case texts; for 5
  chat-templated prompts the top-64 logits, log-sum-exp and entropy at the last position; greedy
  continuations (64 new tokens) of 10 prompts.
Run: .venv-ref/bin/python tests/reference/make_smollm2_golden.py models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import os
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
gguf = os.path.abspath(sys.argv[1])
d, name = os.path.dirname(gguf), os.path.basename(gguf)
tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, torch_dtype=torch.float32).eval()
torch.set_num_threads(2)

rows = [json.loads(l) for l in open(os.path.join(HERE, "../../../shared/data/math/math500.jsonl"))]
texts = [r["prompt"][-1]["content"] for r in rows[:40]] + [
    "Hello, world! 12345 is a number.", "  leading and trailing spaces  ", "tabs\tand\nnewlines\r\n",
    "日本語のテキスト 🙂 ∑ ß", "<|im_start|>user\nHi<|im_end|>", "x^2 + y^2 = z^2, \\frac{1}{2}", "don't I'll we've"]
out = {"tokenize": [{"text": t, "ids": tok.encode(t, add_special_tokens=False)} for t in texts]}

SYS = "Please reason step by step, and put your final answer within \\boxed{}."
def chat(q):
    return tok.apply_chat_template([{"role": "system", "content": SYS}, {"role": "user", "content": q}],
                                   tokenize=False, add_generation_prompt=True)

logits_rows = []
with torch.no_grad():
    for r in rows[:5]:
        text = chat(r["prompt"][-1]["content"])
        ids = tok.encode(text, add_special_tokens=False)
        z = model(torch.tensor([ids])).logits[0, -1].double()
        lse = torch.logsumexp(z, 0)
        p = torch.softmax(z, 0)
        top = torch.topk(z, 64)
        logits_rows.append({"text": text, "ids": ids, "top_ids": top.indices.tolist(),
                            "top_logits": top.values.tolist(), "logsumexp": lse.item(),
                            "entropy": float(-(p * torch.log(p.clamp_min(1e-300))).sum())})
out["logits"] = logits_rows

greedy = []
timing = {}
with torch.no_grad():
    for r in rows[5:15]:
        text = chat(r["prompt"][-1]["content"])
        ids = tok.encode(text, add_special_tokens=False)
        g = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=64, eos_token_id=2,
                           pad_token_id=2)[0, len(ids):].tolist()
        greedy.append({"text": text, "ids": ids, "greedy": g})
    # PyTorch speed on this machine, for the benchmark ratios in docs/ (not used by tests)
    ids = torch.tensor([greedy[0]["ids"]])
    t0 = time.perf_counter(); model(ids); t1 = time.perf_counter()
    t2 = time.perf_counter()
    model.generate(ids, do_sample=False, max_new_tokens=64, min_new_tokens=64, pad_token_id=2)
    t3 = time.perf_counter()
    timing = {"prefill_tokens": ids.shape[1], "prefill_s": t1 - t0, "generate64_s": t3 - t2,
              "torch": torch.__version__, "threads": torch.get_num_threads()}
out["greedy"] = greedy
with open(os.path.join(HERE, "golden/smollm2_reference.json"), "w") as f:
    json.dump(out, f, ensure_ascii=False)
with open(os.path.join(HERE, "golden/smollm2_pytorch_timing.json"), "w") as f:
    json.dump(timing, f, indent=1)
print(len(out["tokenize"]), "tokenizations,", len(logits_rows), "logit rows,", len(greedy), "greedy runs;", timing)
