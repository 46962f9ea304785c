#!/usr/bin/env python3
"""Internal-policy entropy figures and table from a `bupo entropy` HDF5 file (schema bupo-entropy v1-v3).

For every layer l it reports the mean (over response tokens) of
  H(H^{l-1}), H(LN_in(H^{l-1})), H(A^l), H(LN_post(H^{l-1}+A^l)), H(F^l), H(H^l)
and the entropy changes of papers.md §1.3 (Eq. 11–13):
  dH_layer = H(H^l) - H(H^{l-1});  dH_attn = H(A^l) - H(LN_in(H^{l-1}));  dH_ffn = H(F^l) - H(LN_post(.))
and the BuPO boundary-layer rule of §1.6: the last layer with positive mean FFN dH. From v3 files
written with geometry, also Fig. 5's mean cos(H^l, H^L) and KL(pi^l || pi_theta), Fig. 12's residual
cosines cos(A^l, H^{l-1}) and cos(F^l, H^{l-1}+A^l), and the perplexity of pi^l on the responses
(exp of the mean negative log-prob of each response, averaged over the responses).

usage: plot_entropy.py FILE.h5 [FILE.h5 ...] [--out DIR] [--format png|pdf] [--dpi N]
Writes DIR/<stem>_entropy_flow.<fmt> (Fig. 2 style: H(H^{l-1}), H(A^l), H(F^l), H(H^l) per layer) and
DIR/<stem>_entropy_change.<fmt> (Fig. 3 style: dH of ATTN and FFN per layer) and, with geometry,
DIR/<stem>_geometry.<fmt> (cos to the top, KL to the output, Fig. 12's cosines per layer). Needs only
h5py, numpy, matplotlib.
"""
import argparse
import os
import sys

import h5py
import numpy as np


def attr(f, name):
    v = f.attrs[name]
    return v.decode() if isinstance(v, bytes) else v


def summarize(path):
    with h5py.File(path, "r") as f:
        version = int(f.attrs.get("schema_version", 0))
        if attr(f, "schema") != "bupo-entropy" or version not in (1, 2, 3):
            sys.exit(f"{path}: not a bupo-entropy v1-v3 file (schema={attr(f, 'schema')!r})")
        L = int(f.attrs["num_layers"])
        if version >= 2:  # datasets at full size; rows below progress[0] are written (README)
            n = int(f["progress"][0])
            complete = n == int(f.attrs["num_tokens"])
        else:
            n = f["entropy/output"].shape[0]
            complete = int(f.attrs["complete"]) == 1
        m = {k: f[f"entropy/{k}"][:n].astype(np.float64).mean(axis=0)
             for k in ("layer", "attn_in", "attn_out", "ffn_in", "ffn_out")}
        m["output"] = float(f["entropy/output"][:n].mean())
        # perplexity per response: records' rows are consecutive
        rec = f["tokens/record"][:n]
        starts = np.flatnonzero(np.r_[True, rec[1:] != rec[:-1]]) if n else np.array([], int)
        def ppl(lp):
            return np.mean(np.exp(-np.add.reduceat(lp, starts, axis=0) /
                                  np.diff(np.r_[starts, n]).reshape((-1,) + (1,) * (lp.ndim - 1))), axis=0)
        if n:
            m["ppl_layer"] = ppl(f["logprob/layer"][:n].astype(np.float64))
            m["ppl_output"] = float(ppl(f["logprob/output"][:n].astype(np.float64)))
        geometry = version >= 3 and int(f.attrs["geometry"]) == 1
        if geometry:
            for k, ds in (("cos_top", "geometry/cos_to_top"), ("kl", "kl/layer_to_output"),
                          ("cos_attn", "geometry/cos_attn_residual"), ("cos_ffn", "geometry/cos_ffn_residual")):
                m[k] = f[ds][:n].astype(np.float64).mean(axis=0)
        info = dict(L=L, lens=attr(f, "lens"), arch=attr(f, "architecture"), tokens=n,
                    complete=complete, vocab=int(f.attrs["vocab_size"]), geometry=geometry)
    d_layer = m["layer"][1:] - m["layer"][:-1]
    d_attn = m["attn_out"] - m["attn_in"]
    d_ffn = m["ffn_out"] - m["ffn_in"]
    pos = np.nonzero(d_ffn > 0)[0]
    boundary = int(pos[-1]) + 1 if len(pos) else None
    return m, info, d_layer, d_attn, d_ffn, boundary


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--out", default=None, help="directory for figures (default: next to each input)")
    ap.add_argument("--format", choices=("png", "pdf"), default="png")
    ap.add_argument("--dpi", type=int, default=120)
    ap.add_argument("--no-plot", action="store_true", help="print the table only")
    a = ap.parse_args()
    for path in a.inputs:
        m, info, d_layer, d_attn, d_ffn, boundary = summarize(path)
        L = info["L"]
        print(f"{path}: {info['arch']}, L={L}, |V|={info['vocab']} (ln|V|={np.log(info['vocab']):.3f}), "
              f"lens={info['lens']}, {info['tokens']} response tokens{'' if info['complete'] else ', INCOMPLETE'}")
        print(f"{'l':>3} {'H(H^l-1)':>9} {'H(A^l)':>9} {'H(F^l)':>9} {'H(H^l)':>9} {'dH_layer':>9} {'dH_attn':>9} {'dH_ffn':>9}")
        for l in range(1, L + 1):
            print(f"{l:>3} {m['layer'][l-1]:9.4f} {m['attn_out'][l-1]:9.4f} {m['ffn_out'][l-1]:9.4f} "
                  f"{m['layer'][l]:9.4f} {d_layer[l-1]:+9.4f} {d_attn[l-1]:+9.4f} {d_ffn[l-1]:+9.4f}")
        print(f"output policy H = {m['output']:.4f} nats"
              + (f", perplexity {m['ppl_output']:.4f}" if "ppl_output" in m else ""))
        if info["geometry"]:
            print(f"{'l':>3} {'cos(H^l,H^L)':>12} {'KL(pi^l||pi)':>12} {'PPL(pi^l)':>10} {'cos(A,H)':>9} {'cos(F,H+A)':>10}")
            for l in range(0, L + 1):
                ca = f"{m['cos_attn'][l-1]:9.4f}" if l else f"{'':>9}"
                cf = f"{m['cos_ffn'][l-1]:10.4f}" if l else f"{'':>10}"
                print(f"{l:>3} {m['cos_top'][l]:12.4f} {m['kl'][l]:12.4f} {m['ppl_layer'][l]:10.3g} {ca} {cf}")
        print("BuPO boundary layer (last l with mean dH_ffn > 0, papers.md §1.6): "
              + (f"internal_layer = {boundary}" if boundary else "none (no layer with positive FFN dH)"))
        if a.no_plot:
            continue
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        out = a.out or os.path.dirname(os.path.abspath(path))
        os.makedirs(out, exist_ok=True)
        stem = os.path.splitext(os.path.basename(path))[0]
        x, y, colors = [], [], []
        for l in range(1, L + 1):
            for j, (val, c) in enumerate(((m["layer"][l - 1], "k"), (m["attn_out"][l - 1], "tab:blue"),
                                          (m["ffn_out"][l - 1], "tab:orange"), (m["layer"][l], "k"))):
                x.append(l - 1 + j / 4.0)
                y.append(val)
                colors.append(c)
        fig, ax = plt.subplots(figsize=(max(6, L * 0.35), 3.5))
        ax.plot(x, y, "-", color="0.7", lw=1)
        ax.scatter(x, y, c=colors, s=12, zorder=3)
        ax.axhline(np.log(info["vocab"]), ls=":", color="0.5", lw=1, label="ln|V|")
        for c, lab in (("k", "residual H^l"), ("tab:blue", "attention A^l"), ("tab:orange", "FFN F^l")):
            ax.scatter([], [], c=c, s=12, label=lab)
        ax.set_xlabel("layer l  (points: H(H^{l-1}), H(A^l), H(F^l), H(H^l))")
        ax.set_ylabel("entropy (nats)")
        ax.set_title(f"{info['arch']}: internal-policy entropy flow ({info['lens']} lens)")
        ax.legend(loc="best")
        p1 = os.path.join(out, f"{stem}_entropy_flow.{a.format}")
        fig.savefig(p1, dpi=a.dpi, bbox_inches="tight")
        plt.close(fig)
        fig, axs = plt.subplots(1, 2, figsize=(10, 3.2), sharex=True)
        ls = np.arange(1, L + 1)
        for ax, d, name in ((axs[0], d_attn, "ATTN"), (axs[1], d_ffn, "FFN")):
            ax.bar(ls, d, color=np.where(d > 0, "tab:red", "tab:blue"))
            ax.axhline(0, color="k", lw=0.8)
            ax.set_title(f"ΔH {name} per layer (Eq. 12/13)")
            ax.set_xlabel("layer l")
        axs[0].set_ylabel("mean entropy change (nats)")
        p2 = os.path.join(out, f"{stem}_entropy_change.{a.format}")
        fig.savefig(p2, dpi=a.dpi, bbox_inches="tight")
        plt.close(fig)
        figs = [p1, p2]
        if info["geometry"]:
            fig, axs = plt.subplots(1, 3, figsize=(13, 3.2))
            l0 = np.arange(0, L + 1)
            axs[0].plot(l0, m["cos_top"], "o-", ms=3)
            axs[0].set_title("cos(H^l, H^L) (Fig. 5)")
            axs[1].plot(l0, m["kl"], "o-", ms=3, color="tab:purple")
            axs[1].set_title(f"KL(π^l ‖ π_θ), nats ({info['lens']} lens)")
            axs[2].plot(ls, m["cos_attn"], "o-", ms=3, label="cos(A^l, H^{l-1})")
            axs[2].plot(ls, m["cos_ffn"], "o-", ms=3, label="cos(F^l, H^{l-1}+A^l)")
            axs[2].axhline(0, color="k", lw=0.8)
            axs[2].set_title("residual cosines (Fig. 12)")
            axs[2].legend(loc="best", fontsize=8)
            for ax in axs:
                ax.set_xlabel("layer l")
            p3 = os.path.join(out, f"{stem}_geometry.{a.format}")
            fig.savefig(p3, dpi=a.dpi, bbox_inches="tight")
            plt.close(fig)
            figs.append(p3)
        print("figures: " + ", ".join(figs))


if __name__ == "__main__":
    main()
