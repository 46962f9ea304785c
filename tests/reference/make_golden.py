#!/usr/bin/env python3
"""Golden data for tests/reference/test_reference.cpp, made with Hugging Face transformers' own
modeling classes (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM) in fp32.

For each tiny random model it writes, under golden/<name>/:
  config.json, model*.safetensors   the checkpoint, via save_pretrained (llama: sharded;
                                    qwen2: stored in bf16, goldens computed from the rounded weights)
  inputs.json                       token sequences, internal layer l, tolerances
  golden.safetensors                logits (N, V) of the output policy;
                                    lens entropies (raw and normed) of every layer/module (N, ·);
                                    log-probs of the next token under pi^l (raw lens) and the output;
                                    grad_int.<param>: d/dθ of  -mean_t log pi^l(x_{t+1})  (params with
                                    no gradient are absent: layers above l and the final norm);
                                    grad_out.<param>: d/dθ of  -mean_t log pi(x_{t+1})  (output policy)
Regenerate with:  bash env/setup-reference.sh && .venv-ref/bin/python tests/reference/make_golden.py
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "golden")

COMMON = dict(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-6, hidden_act="silu")

MODELS = {
    # untied, Llama-3 rope scaling, GQA, sharded checkpoint
    "llama": (LlamaForCausalLM, LlamaConfig(**COMMON, head_dim=12, rope_theta=500000.0, tie_word_embeddings=False,
                                             attention_bias=False,
                                             rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                           "original_max_position_embeddings": 16}),
              dict(shard="20KB", dtype=torch.float32)),
    # tied embeddings, q_norm/k_norm, head_dim != hidden/heads
    "qwen3": (Qwen3ForCausalLM, Qwen3Config(**COMMON, head_dim=16, rope_theta=1000000.0, tie_word_embeddings=True,
                                             attention_bias=False),
              dict(shard=None, dtype=torch.float32)),
    # q/k/v bias, untied, weights stored as bf16
    "qwen2": (Qwen2ForCausalLM, Qwen2Config(**COMMON, rope_theta=10000.0, tie_word_embeddings=False),
              dict(shard=None, dtype=torch.bfloat16)),
}
SEQS = [[5, 17, 33, 2, 91, 64, 8, 8, 40, 12, 77], [3, 50, 21, 95, 0, 44, 60]]
INTERNAL_LAYER = 2  # paper numbering: pi^2 = softmax(H^2 E_u^T)


def entropy(logits):
    lp = torch.log_softmax(logits.double(), dim=-1)
    return -(lp.exp() * lp).sum(-1).float()


def run(name, cls, cfg, opts):
    torch.manual_seed({"llama": 1, "qwen3": 2, "qwen2": 3}[name])
    cfg._attn_implementation = "eager"
    model = cls(cfg).float().eval()
    with torch.no_grad():  # non-trivial norm gains and biases, so their gradients are tested
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif n.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    save_kw = {"safe_serialization": True}
    if opts["shard"]:
        save_kw["max_shard_size"] = opts["shard"]
    model.to(opts["dtype"]).save_pretrained(d, **save_kw)
    model = cls.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager").eval()

    L = cfg.num_hidden_layers
    E = model.lm_head.weight
    fnorm = model.model.norm
    taps = {}

    def hook(key):
        def f(_m, _inp, out):
            taps[key] = out[0] if isinstance(out, tuple) else out
        return f

    def pre_hook(key):
        def f(_m, inp):
            taps[key] = inp[0]
        return f

    model.model.embed_tokens.register_forward_hook(hook("h0"))
    for i, layer in enumerate(model.model.layers):
        l = i + 1
        layer.register_forward_hook(hook(f"h{l}"))
        layer.input_layernorm.register_forward_hook(hook(f"attn_in{l}"))
        layer.self_attn.register_forward_hook(hook(f"attn_out{l}"))
        layer.post_attention_layernorm.register_forward_hook(hook(f"ffn_in{l}"))
        layer.mlp.register_forward_hook(hook(f"ffn_out{l}"))
    fnorm.register_forward_hook(hook("final"))

    out = {}
    cat = lambda key: torch.cat(key, 0)
    rows = {k: [] for k in ["logits", "lp_int", "lp_out"] +
            [f"{m}_{lens}" for m in ("layer", "attn_in", "attn_out", "ffn_in", "ffn_out", "output")
             for lens in ("raw", "normed")]}
    loss_int, loss_out, ntok = 0.0, 0.0, 0
    for seq in SEQS:
        ids = torch.tensor([seq])
        taps.clear()
        logits = model(input_ids=ids).logits[0]
        rows["logits"].append(logits.detach())
        ent = lambda x, normed: entropy((fnorm(x) if normed else x) @ E.T)[0].detach()
        for lens, normed in (("raw", False), ("normed", True)):
            rows[f"layer_{lens}"].append(torch.stack([ent(taps[f"h{l}"], normed) for l in range(L + 1)], 1))
            for m in ("attn_in", "attn_out", "ffn_in", "ffn_out"):
                rows[f"{m}_{lens}"].append(torch.stack([ent(taps[f"{m}{l}"], normed) for l in range(1, L + 1)], 1))
            rows[f"output_{lens}"].append(entropy(logits).detach())
        tgt = ids[0, 1:]
        lp_int = torch.log_softmax(taps[f"h{INTERNAL_LAYER}"][0, :-1] @ E.T, -1).gather(1, tgt[:, None])[:, 0]
        lp_out = torch.log_softmax(logits[:-1], -1).gather(1, tgt[:, None])[:, 0]
        pad = torch.zeros(1)
        rows["lp_int"].append(torch.cat([lp_int.detach(), pad]))
        rows["lp_out"].append(torch.cat([lp_out.detach(), pad]))
        loss_int = loss_int + (-lp_int.sum())
        loss_out = loss_out + (-lp_out.sum())
        ntok += len(seq) - 1
    for k, v in rows.items():
        out[k] = cat(v).contiguous()

    def grads(loss, prefix):
        model.zero_grad(set_to_none=True)
        (loss / ntok).backward(retain_graph=True)
        for n, p in model.named_parameters():
            if p.grad is not None:
                out[f"{prefix}.{n}"] = p.grad.detach().clone().contiguous()
    grads(loss_int, "grad_int")
    grads(loss_out, "grad_out")
    if cfg.tie_word_embeddings:  # name the tied tensor as it is stored in the checkpoint
        for prefix in ("grad_int", "grad_out"):
            out.pop(f"{prefix}.lm_head.weight", None)
    save_file(out, os.path.join(d, "golden.safetensors"))
    with open(os.path.join(d, "inputs.json"), "w") as f:
        json.dump({"seqs": SEQS, "internal_layer": INTERNAL_LAYER, "torch": torch.__version__,
                   "transformers": __import__("transformers").__version__}, f, indent=1)
    print(f"{name}: {sum(p.numel() for p in model.parameters())} params, files: {sorted(os.listdir(d))}")


if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    for name, (cls, cfg, opts) in MODELS.items():
        if len(sys.argv) > 1 and name not in sys.argv[1:]:
            continue
        run(name, cls, cfg, opts)
