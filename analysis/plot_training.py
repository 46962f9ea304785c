#!/usr/bin/env python3
"""Training curves and per-layer internal-policy entropy over steps from a `bupo train` diagnostics
file (schema bupo-train v1; README "HDF5 schema").

usage: plot_training.py diagnostics.h5 [--out DIR] [--format png|pdf] [--dpi N]
Writes DIR/training_curves.<fmt> (reward, accuracy, response length, policy entropy, clip fraction,
grad norm, with BuPO phase 1 shaded), DIR/layer_entropy.<fmt> (H(H^l) of every layer over steps, and
the entropy change of the FFN modules per layer at the first and last diagnostics step) and prints a
summary. The file may still be open by a running trainer (set HDF5_USE_FILE_LOCKING=FALSE on
shared file systems). Needs h5py, numpy, matplotlib.
"""
import argparse
import os
import sys

import h5py
import numpy as np

from h5attrs import attr


def load(path):
    with h5py.File(path, "r", locking=False) if "locking" in h5py.File.__init__.__code__.co_varnames else h5py.File(path, "r") as f:
        if attr(f, "schema") != "bupo-train" or int(f.attrs["schema_version"]) != 1:
            sys.exit(f"{path}: not a bupo-train v1 file (schema={attr(f, 'schema')!r})")
        steps = {k: f[f"steps/{k}"][:] for k in f["steps"]}
        n = min(len(v) for v in steps.values())  # a writer killed mid-step may leave one short column
        steps = {k: v[:n] for k, v in steps.items()}
        ent = None
        if "entropy" in f:
            ent = {k: f[f"entropy/{k}"][:] for k in f["entropy"]}
            m = min(len(v) for v in ent.values())
            ent = {k: v[:m] for k, v in ent.items()}
        val = {}
        if "validation" in f:
            for s in f["validation"]:
                g = f[f"validation/{s}"]
                m = min(len(g[k]) for k in g)
                val[s] = dict(step=g["step"][:m], avg=g["avg"][:m], pass_at_k=g["pass_at_k"][:m],
                              k=attr(g["pass_at_k"], "k", ""))
        info = dict(L=int(attr(f, "num_layers", 0)), config=attr(f, "config", ""))
    return steps, ent, val, info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--out", default=None)
    ap.add_argument("--format", default="png", choices=["png", "pdf", "svg"])
    ap.add_argument("--dpi", type=int, default=120)
    a = ap.parse_args()
    out = a.out or os.path.dirname(os.path.abspath(a.file))
    os.makedirs(out, exist_ok=True)
    steps, ent, val, info = load(a.file)
    s = steps["step"]
    if len(s) == 0:
        sys.exit(f"{a.file}: no steps written yet")
    k = max(1, min(10, len(s) // 3))
    print(f"{a.file}: {len(s)} steps, {info['L']} layers")
    for name in ("reward", "accuracy", "response_length", "entropy", "entropy_rollout"):
        if name in steps:
            v = steps[name]
            print(f"  {name:16s} first {k}: {v[:k].mean():8.4f}   last {k}: {v[-k:].mean():8.4f}")
    if "time_step" in steps:
        print(f"  time per step {steps['time_step'].mean():.3f} s, HDF5+JSONL write "
              f"{1e3 * steps['time_log_write_prev'][1:].mean() if len(s) > 1 else 0:.2f} ms")
    for name, v in val.items():
        print(f"  validation {name}: avg " + " ".join(f"{x:.3f}@{int(t)}" for x, t in zip(v['avg'], v['step'])))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phase1 = s[steps["phase"] == 1] if "phase" in steps else np.array([])
    panels = [("reward", "reward"), ("accuracy", "accuracy"), ("response_length", "response length (tokens)"),
              ("entropy", "entropy of the trained policy (nats)"), ("clip_frac", "clip fraction"),
              ("grad_norm", "grad norm (before clipping)")]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, (key, label) in zip(axes.flat, panels):
        if key not in steps:
            ax.set_visible(False)
            continue
        ax.plot(s, steps[key], lw=1, color="C0", alpha=0.5)
        if len(s) >= 5:
            w = max(2, len(s) // 10)
            sm = np.convolve(steps[key], np.ones(w) / w, mode="valid")
            ax.plot(s[w - 1:], sm, lw=2, color="C0")
        if key == "entropy" and "entropy_rollout" in steps:
            ax.plot(s, steps["entropy_rollout"], lw=1, color="C1", label="full policy (rollouts)")
            ax.legend(fontsize=8)
        if key == "accuracy":
            for name, v in val.items():
                ax.plot(v["step"], v["avg"], "o-", color="C3", label=f"validation {name}")
            if val:
                ax.legend(fontsize=8)
        if len(phase1):
            ax.axvspan(phase1.min() - 0.5, phase1.max() + 0.5, color="C2", alpha=0.12, label="BuPO phase 1")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
    fig.suptitle("bupo train: " + os.path.abspath(a.file) + ("  (green: BuPO phase 1)" if len(phase1) else ""),
                 fontsize=9)
    fig.tight_layout()
    p1 = os.path.join(out, f"training_curves.{a.format}")
    fig.savefig(p1, dpi=a.dpi)
    print(f"wrote {p1}")

    if ent is not None and len(ent["step"]):
        es, lay = ent["step"], ent["layer"]
        L = lay.shape[1] - 1
        fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(16, 4.8))
        im = ax0.imshow(lay.T, aspect="auto", origin="lower", cmap="viridis",
                        extent=[es[0] - 0.5, es[-1] + 0.5, -0.5, L + 0.5])
        fig.colorbar(im, ax=ax0, label="H(H^l) (nats)")
        ax0.set_xlabel("step")
        ax0.set_ylabel("layer l (0 = embedding)")
        ax0.set_title("internal-policy entropy H(H^l) per layer")
        cmap = plt.get_cmap("plasma")
        for l in range(L + 1):
            ax1.plot(es, lay[:, l], color=cmap(l / max(1, L)), lw=1.2, label=f"H^{l}" if L <= 12 else None)
        ax1.plot(es, ent["output"], "k--", lw=1.5, label="output policy")
        if "bupo_layer" in ent and np.isfinite(ent["bupo_layer"]).any():
            ax1.plot(es, ent["bupo_layer"], "r:", lw=2.5, label="BuPO layer pi^l")
        if len(phase1):
            ax1.axvspan(phase1.min() - 0.5, phase1.max() + 0.5, color="C2", alpha=0.12)
        ax1.set_xlabel("step")
        ax1.set_ylabel("entropy (nats)")
        ax1.set_title("per-layer entropy over training")
        ax1.legend(fontsize=7, ncol=2)
        layers = np.arange(1, L + 1)
        for idx, lab, c in ((0, f"step {es[0]}", "C0"), (-1, f"step {es[-1]}", "C3")):
            ax2.bar(layers + (-0.2 if idx == 0 else 0.2), ent["ffn_out"][idx] - ent["ffn_in"][idx], width=0.4,
                    color=c, label=f"dH_FFN, {lab}")
            ax2.plot(layers, ent["attn_out"][idx] - ent["attn_in"][idx], "o-", color=c, alpha=0.6,
                     label=f"dH_ATTN, {lab}")
        ax2.axhline(0, color="k", lw=0.8)
        ax2.set_xlabel("layer l")
        ax2.set_ylabel("mean entropy change (nats)")
        ax2.set_title("module entropy change (papers.md Eq. 12-13)")
        ax2.legend(fontsize=7)
        fig.tight_layout()
        p2 = os.path.join(out, f"layer_entropy.{a.format}")
        fig.savefig(p2, dpi=a.dpi)
        print(f"wrote {p2}")


if __name__ == "__main__":
    main()
