#!/usr/bin/env python3
"""Golden renderings of the Qwen3 chat template (../shared/tokenizers/qwen3/tokenizer_config.json),
made with Hugging Face's own apply_chat_template (Jinja), for tests/unit/test_chat_template.cpp.
Run: .venv-ref/bin/python tests/reference/make_chat_golden.py"""
import json
import os

from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
tok = AutoTokenizer.from_pretrained(os.path.join(HERE, "../../../shared/tokenizers/qwen3"))
SYS = "Please reason step by step, and put your final answer within \\boxed{}."
CONVS = [
    [{"role": "system", "content": SYS}, {"role": "user", "content": "What is $1+1$?"}],
    [{"role": "user", "content": "Hi there\n"}],
    [{"role": "system", "content": SYS}, {"role": "user", "content": "Q1"},
     {"role": "assistant", "content": "<think>\nfirst thoughts\n</think>\n\nA1"},
     {"role": "user", "content": "Q2"}],
    [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "<think>\nr\n</think>\n\nA1"}],
    [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "plain answer"},
     {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "\n\nsecond"}],
]
out = []
for msgs in CONVS:
    for thinking in (True, False):
        gen = msgs[-1]["role"] != "assistant"
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen, enable_thinking=thinking)
        out.append({"messages": msgs, "enable_thinking": thinking, "add_generation_prompt": gen, "text": text,
                    "ids": tok(text)["input_ids"]})
with open(os.path.join(HERE, "golden/qwen3_chat_template.json"), "w") as f:
    json.dump(out, f, indent=1, ensure_ascii=False)
print(len(out), "renderings")
