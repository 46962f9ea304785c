#!/usr/bin/env python3
"""Validation scores over steps from `bupo eval` files (schema bupo-eval v1) and, optionally, a
training run's diagnostics.h5 (its /validation groups have the same layout), as a table and a
figure.

usage: plot_eval.py PATH [PATH ...] [--out DIR] [--format png|pdf] [--dpi N] [--no-plot]
PATH: a bupo-eval file, a folder of them (jobs/slurm/eval_sweep.sbatch writes one per checkpoint)
or a diagnostics.h5. For every set and step it prints avg@n with a 95% interval over the prompts
(normal approximation from the per-prompt counts of a bupo-eval file: mean of c_i/n +- 1.96 s/sqrt(P);
diagnostics.h5 keeps no counts, so no interval) and the unbiased pass@k, and draws
DIR/eval_<set>.<fmt>: avg@n and pass@k over steps. Incomplete eval files are read for the sets they
hold and marked. Needs h5py, numpy, matplotlib.
"""
import argparse
import glob
import os
import sys

import h5py
import numpy as np

from h5attrs import attr


def rows(path):
    """(set, step, n, temperature, avg, ci, {k: pass}, source, complete) for every row of a file."""
    out = []
    with h5py.File(path, "r") as f:
        schema = attr(f, "schema")
        if schema not in ("bupo-eval", "bupo-train"):
            sys.exit(f"{path}: neither a bupo-eval nor a bupo-train file (schema={schema!r})")
        complete = schema == "bupo-train" or int(attr(f, "complete", 0)) == 1
        for name in (f["validation"] if "validation" in f else []):
            g = f[f"validation/{name}"]
            steps, avg, pass_ = g["step"][:], g["avg"][:], g["pass_at_k"][:]
            ks = [int(k) for k in str(attr(g["pass_at_k"], "k", "")).split(",") if k]
            n = attr(g["avg"], "n")
            temp = attr(g["avg"], "temperature")
            correct = g["correct"][:] if "correct" in g else None
            for i in range(len(steps)):
                ci = None
                if correct is not None and n:
                    x = correct[i].astype(np.float64) / float(n)
                    ci = 1.96 * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else 0.0
                out.append((name, int(steps[i]), n, temp, float(avg[i]), ci,
                            dict(zip(ks, map(float, pass_[i]))), path, complete))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--out", default=".")
    ap.add_argument("--format", default="png", choices=["png", "pdf"])
    ap.add_argument("--dpi", type=int, default=120)
    ap.add_argument("--no-plot", action="store_true")
    a = ap.parse_args()
    files = []
    for p in a.paths:
        files += sorted(glob.glob(os.path.join(p, "*.h5"))) if os.path.isdir(p) else [p]
    if not files:
        sys.exit("no .h5 files found")
    table = [r for p in files for r in rows(p)]
    sets = sorted({r[0] for r in table})
    for s in sets:
        rs = sorted((r for r in table if r[0] == s), key=lambda r: (r[1], r[7]))
        ks = sorted({k for r in rs for k in r[6]})
        print(f"{s}")
        print(f"{'step':>8} {'n':>5} {'T':>6} {'avg@n':>8} {'95% CI':>8} " +
              " ".join(f"{'pass@' + str(k):>9}" for k in ks) + "  file")
        for r in rs:
            ci = f"{r[5]:8.4f}" if r[5] is not None else f"{'':>8}"
            n = f"{r[2]:>5}" if r[2] is not None else f"{'':>5}"
            t = f"{r[3]:6.3g}" if r[3] is not None else f"{'':>6}"
            print(f"{r[1]:>8} {n} {t} {r[4]:8.4f} {ci} " +
                  " ".join(f"{r[6][k]:9.4f}" if k in r[6] else f"{'':>9}" for k in ks) +
                  f"  {os.path.basename(r[7])}{'' if r[8] else ' (incomplete)'}")
    if a.no_plot:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(a.out, exist_ok=True)
    for s in sets:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        # one line per source: the bupo-eval files together, each diagnostics.h5 on its own
        series = {}
        for r in sorted((r for r in table if r[0] == s), key=lambda r: r[1]):
            series.setdefault("bupo eval" if r[5] is not None else r[7], []).append(r)
        for i, (label, rs) in enumerate(series.items()):
            x = np.array([r[1] for r in rs])
            y = np.array([r[4] for r in rs])
            ax.plot(x, y, "o-", label=f"avg@n ({label})")
            if label == "bupo eval":
                ci = np.array([r[5] for r in rs])
                ax.fill_between(x, y - ci, y + ci, alpha=0.2, label="95% interval (prompts)")
            if i == 0:
                for k in sorted({k for r in rs for k in r[6]} - {1}):
                    pts = [(r[1], r[6][k]) for r in rs if k in r[6]]
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], ".--", label=f"pass@{k}")
        ax.set_xlabel("training step")
        ax.set_ylabel("accuracy")
        ax.set_title(s)
        ax.legend(fontsize=8)
        p = os.path.join(a.out, f"eval_{s}.{a.format}")
        fig.savefig(p, dpi=a.dpi, bbox_inches="tight")
        plt.close(fig)
        print(f"figure: {p}")


if __name__ == "__main__":
    main()
