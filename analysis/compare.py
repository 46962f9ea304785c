#!/usr/bin/env python3
"""The multi-seed comparison of a study folder (jobs/experiments/study.py): every variant against a
baseline, with intervals over seeds, paired tests and the per-layer entropy dynamics.

usage: compare.py STUDY [--baseline grpo] [--last 5] [--out DIR] [--format png|pdf] [--no-plot]

For every variant (STUDY/<variant>/seed_<s>/diagnostics.h5) it prints, over the seeds: the final
validation avg@n and pass@k, the mean rollout reward of the last --last steps, each as mean +- the 95%
Student-t interval (t_{0.975, n-1} s / sqrt(n)), and the paired difference to the baseline on the
seeds both have (a seed fixes the initialisation, the warm start and the data order, so the
comparison is paired): mean +- 95% interval, the paired t-test's two-sided p and the exact sign-flip
permutation p (2^n sign patterns; with 5 seeds its smallest two-sided value is 1/16). Then the
entropy dynamics of BuPO's phase 1 (papers.md §1.5, Fig. 4/5): over steps 1..s_inter, the change of
H(pi^l) and of every layer's H(H^l), of cos(H^l, H^L) and of KL(pi^l || pi_theta) (when the runs
logged diagnostics.geometry), for each BuPO variant next to the baseline over the same steps.
Figures (DIR/compare_validation.<fmt>, compare_reward.<fmt>, compare_layers.<fmt>) unless --no-plot.
Needs h5py and numpy (matplotlib for the figures); no scipy: the t distribution is computed here.
"""
import argparse
import glob
import itertools
import json
import math
import os
import sys
import tomllib

import h5py
import numpy as np

from h5attrs import attr


# ---- Student's t without scipy: the regularized incomplete beta by Lentz's continued fraction
def _betacf(a, b, x):
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a, b, x):
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lb = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(lb) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lb) * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t, df):
    return betainc(df / 2.0, 0.5, df / (df + t * t)) if np.isfinite(t) else 0.0


def t_quantile_975(df):
    lo, hi = 0.0, 1e3  # p(|T| > q) = 0.05, by bisection
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_two_sided_p(mid, df) > 0.05 else (lo, mid)
    return 0.5 * (lo + hi)


def mean_ci(x):
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), 0
    if len(x) == 1:
        return float(x[0]), float("nan"), 1
    return float(x.mean()), t_quantile_975(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x)), len(x)


def paired(a, b):
    """a - b on common seeds: (mean, ci, t-test p, sign-flip p, n)."""
    d = np.array([a[s] - b[s] for s in sorted(set(a) & set(b)) if np.isfinite(a[s] - b[s])])
    n = len(d)
    if n < 2:
        return float("nan"), float("nan"), float("nan"), float("nan"), n
    m, ci, _ = mean_ci(d)
    sd = d.std(ddof=1)
    p_t = t_two_sided_p(m / (sd / math.sqrt(n)), n - 1) if sd > 0 else (1.0 if m == 0 else 0.0)
    obs = abs(d.sum())
    flips = [abs(np.dot(s, d)) >= obs - 1e-12 for s in itertools.product((1.0, -1.0), repeat=n)]
    return m, ci, p_t, float(np.mean(flips)), n


def load_run(path):
    with h5py.File(path, "r") as f:
        if attr(f, "schema") != "bupo-train":
            raise ValueError(f"{path}: not a bupo-train file")
        if "steps/step" not in f:
            return None  # a run still in its warm start
        r = {"step": f["steps/step"][:], "reward": f["steps/reward"][:].astype(np.float64),
             "phase": f["steps/phase"][:], "bupo_layer": f["steps/bupo_layer"][:]}
        for k, ds in (("entropy", "steps/entropy_rollout"), ("temperature", "steps/temperature_mean"),
                      ("length", "steps/response_length")):
            r[k] = f[ds][:].astype(np.float64) if ds in f else np.full(len(r["step"]), np.nan)
        val = {}
        for name in (f["validation"] if "validation" in f else []):
            g = f[f"validation/{name}"]
            ks = [int(k) for k in str(attr(g["pass_at_k"], "k", "")).split(",") if k]
            val[name] = (g["step"][:], g["avg"][:].astype(np.float64), ks, g["pass_at_k"][:].astype(np.float64))
        r["val"] = val
        if "entropy" in f:
            r["ent_step"] = f["entropy/step"][:]
            for k in ("layer", "output", "bupo_layer", "cos_to_top", "kl_to_output"):
                if f"entropy/{k}" in f:
                    r["ent_" + k] = f[f"entropy/{k}"][:].astype(np.float64)
        cfg = tomllib.loads(attr(f, "config", ""))  # the run's effective TOML
        r["steps_planned"] = cfg.get("trainer", {}).get("steps")
        r["internal_steps"] = cfg.get("bupo", {}).get("internal_steps", 0)
        r["internal_layer"] = cfg.get("bupo", {}).get("internal_layer", 0)
    return r


def load_study(study):
    variants = {}
    for vdir in sorted(glob.glob(os.path.join(study, "*"))):
        if not os.path.isdir(vdir):
            continue
        runs = {}
        for rdir in glob.glob(os.path.join(vdir, "seed_*")):
            h5 = os.path.join(rdir, "diagnostics.h5")
            if not os.path.exists(h5):
                continue
            r = load_run(h5)
            if r is None:
                print(f"note: {rdir} has no step yet: left out")
                continue
            if r["steps_planned"] and len(r["step"]) < r["steps_planned"]:
                print(f"note: {rdir} is unfinished ({len(r['step'])}/{r['steps_planned']} steps): left out")
                continue
            runs[int(rdir.rsplit("_", 1)[1])] = r
        if runs:
            meta = {}
            if os.path.exists(os.path.join(vdir, "variant.json")):
                with open(os.path.join(vdir, "variant.json")) as f:
                    meta = json.load(f)
            variants[os.path.basename(vdir)] = (meta.get("what", ""), runs)
    return variants


def fmt(m, ci, digits=3):
    return f"{m:.{digits}f} ± {ci:.{digits}f}" if np.isfinite(ci) else f"{m:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study")
    ap.add_argument("--baseline", default="grpo")
    ap.add_argument("--last", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--format", default="png", choices=["png", "pdf"])
    ap.add_argument("--dpi", type=int, default=120)
    ap.add_argument("--no-plot", action="store_true")
    a = ap.parse_args()
    V = load_study(a.study)
    if not V:
        sys.exit(f"{a.study}: no finished runs (STUDY/<variant>/seed_<s>/diagnostics.h5)")
    if a.baseline not in V:
        sys.exit(f"--baseline {a.baseline}: not in the study ({', '.join(V)})")
    vset = sorted({n for _, runs in V.values() for r in runs.values() for n in r["val"]})
    base_runs = V[a.baseline][1]

    def final_val(r, name, col=None):
        if name not in r["val"]:
            return float("nan")
        steps, avg, ks, pk = r["val"][name]
        return float(avg[-1]) if col is None else float(pk[-1, col])

    def last_reward(r):
        return float(np.mean(r["reward"][-a.last:]))

    print(f"study {a.study}: {sum(len(r) for _, r in V.values())} runs, baseline {a.baseline}; "
          f"± is the 95% Student-t interval over seeds; p: paired t-test / exact sign flip")
    for name in vset:
        ks = next(r["val"][name][2] for _, runs in V.values() for r in runs.values() if name in r["val"])
        print(f"\nvalidation set {name}, at the last step (avg@n, pass@{ks[-1]}) and the mean reward of "
              f"the last {a.last} steps")
        print(f"{'variant':14} {'seeds':>5} {'avg@n':>15} {'Δ vs base':>16} {'p (t)':>7} {'p (flip)':>8} "
              f"{'pass@' + str(ks[-1]):>15} {'reward':>15} {'Δ reward':>16} {'p (t)':>7}")
        for v, (what, runs) in V.items():
            fv = {s: final_val(r, name) for s, r in runs.items()}
            fp = {s: final_val(r, name, len(ks) - 1) for s, r in runs.items()}
            rw = {s: last_reward(r) for s, r in runs.items()}
            bv = {s: final_val(r, name) for s, r in base_runs.items()}
            br = {s: last_reward(r) for s, r in base_runs.items()}
            m, ci, n = mean_ci(list(fv.values()))
            pm, pci, _ = mean_ci(list(fp.values()))
            rm, rci, _ = mean_ci(list(rw.values()))
            if v == a.baseline:
                d = (float("nan"),) * 4
                dr = (float("nan"),) * 3
            else:
                d = paired(fv, bv)[:4]
                dr = paired(rw, br)[:3]
            ds = fmt(d[0], d[1]) if np.isfinite(d[0]) else "—"
            drs = fmt(dr[0], dr[1]) if np.isfinite(dr[0]) else "—"
            print(f"{v:14} {n:>5} {fmt(m, ci):>15} {ds:>16} {d[2]:>7.3f} {d[3]:>8.3f} {fmt(pm, pci):>15} "
                  f"{fmt(rm, rci):>15} {drs:>16} {dr[2]:>7.3f}".replace("nan", "  —"))

    # how each variant behaves (papers.md §4's toy expectations: HAPO's rollout temperature above
    # 1, its entropy above DAPO's)
    print("\nbehaviour, mean over all steps (mean ± 95% over seeds): entropy of the rollouts "
          "(the untempered full policy on the sampled tokens, nats), rollout temperature, response length")
    for v, (what, runs) in V.items():
        cells = [fmt(*mean_ci([float(np.nanmean(r[k])) for r in runs.values()])[:2])
                 for k in ("entropy", "temperature", "length")]
        print(f"  {v:14} {cells[0]:>17} {cells[1]:>17} {cells[2]:>19}")

    # entropy dynamics of phase 1 against the baseline over the same steps
    print("\nphase-1 dynamics (papers.md §1.5, Fig. 4/5): change from step 1 to step s_inter, mean ± 95% "
          "over seeds, and the variant's change minus the baseline's on the same seed")
    for v, (what, runs) in V.items():
        r0 = next(iter(runs.values()))
        s_int, l = r0["internal_steps"], r0["internal_layer"]
        if not s_int or not l or "ent_layer" not in r0:
            continue
        L = r0["ent_layer"].shape[1] - 1

        def change(rr, key, col=None, until=s_int):
            st = rr["ent_step"]
            i0, i1 = np.flatnonzero(st == 1), np.flatnonzero(st == until)
            if key not in rr or not len(i0) or not len(i1):
                return float("nan")
            x = rr[key] if col is None else rr[key][:, col]
            return float(x[i1[0]] - x[i0[0]])
        print(f"{v} (pi^{l}, steps 1..{s_int}) vs {a.baseline} over the same steps:")
        rows = [(f"H(pi^{l}) = H(H^{l})", "ent_layer", l)] + \
               [(f"H(H^{j})", "ent_layer", j) for j in range(1, L + 1) if j != l] + \
               [("H(pi_theta)", "ent_output", None), (f"cos(H^{l}, H^{L})", "ent_cos_to_top", l),
                (f"KL(pi^{l} || pi_theta)", "ent_kl_to_output", l)]
        print(f"  {'':24} {v:>17}   {a.baseline:>17}   {'paired difference':>17} {'p (t)':>7} {'p (flip)':>8}")
        for label, key, col in rows:
            x = {s: change(rr, key, col) for s, rr in runs.items()}
            y = {s: change(rr, key, col, s_int) for s, rr in base_runs.items()}
            if not np.isfinite(list(x.values())).any():
                continue
            m, ci, _ = mean_ci(list(x.values()))
            bm, bci, _ = mean_ci(list(y.values()))
            dm, dci, p_t, p_f, _ = paired(x, y)
            print(f"  {label:24} {fmt(m, ci):>17}   {fmt(bm, bci):>17}   {fmt(dm, dci):>17} {p_t:>7.3f} "
                  f"{p_f:>8.3f}")

    if a.no_plot:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = a.out or a.study
    os.makedirs(out, exist_ok=True)
    figs = []

    def save(fig, name):  # DIR/<name>.<fmt>, listed at the end
        p = os.path.join(out, f"{name}.{a.format}")
        fig.savefig(p, dpi=a.dpi, bbox_inches="tight")
        plt.close(fig)
        figs.append(p)

    # one colour per variant in every figure (the default cycle repeats after 10)
    colour = {v: plt.cm.tab20(i % 20) for i, v in enumerate(sorted(V))}
    for name in vset:  # the paired difference to the baseline: the seeds' spread cancels
        fig, ax = plt.subplots(figsize=(6, 3.6))
        others = [v for v in V if v != a.baseline]
        for i, v in enumerate(others):
            common = sorted(s for s in V[v][1] if s in base_runs and name in V[v][1][s]["val"])
            if not common:
                continue
            steps = base_runs[common[0]]["val"][name][0]
            D = np.array([V[v][1][s]["val"][name][1] - base_runs[s]["val"][name][1] for s in common])
            m = D.mean(axis=0)
            ci = np.array([mean_ci(D[:, j])[1] for j in range(D.shape[1])])
            ax.errorbar(steps + 0.25 * (i - len(others) / 2), m, yerr=ci, marker="o", ms=3, capsize=2,
                        color=colour[v], label=f"{v} ({len(common)})")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"Δ validation avg@n vs {a.baseline}")
        ax.set_title(f"{name}: paired by seed, mean ± 95%")
        ax.legend(fontsize=7, ncol=2)
        save(fig, "compare_validation")
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for v, (what, runs) in V.items():
        n = min(len(r["reward"]) for r in runs.values())
        Y = np.array([r["reward"][:n] for r in runs.values()])
        k = 3
        sm = np.array([np.convolve(y, np.ones(k) / k, mode="valid") for y in Y])
        ax.plot(np.arange(k, n + 1), sm.mean(axis=0), color=colour[v], label=v)
    ax.set_xlabel("training step")
    ax.set_ylabel("rollout reward (3-step mean, seed mean)")
    ax.legend(fontsize=7, ncol=2)
    save(fig, "compare_reward")
    bupos = [v for v, (_, runs) in V.items()
             if next(iter(runs.values()))["internal_steps"] and "ent_layer" in next(iter(runs.values()))]
    if bupos:  # phase 1 against the baseline, paired by seed: H(pi^l) and cos(H^l, H^L) per step
        fig, axs = plt.subplots(1, 2, figsize=(11, 3.6))
        for v in bupos:
            runs = V[v][1]
            common = sorted(s for s in runs if s in base_runs and "ent_layer" in base_runs[s])
            if not common:
                continue
            l, s_int = runs[common[0]]["internal_layer"], runs[common[0]]["internal_steps"]
            n = min(min(len(runs[s]["ent_step"]), len(base_runs[s]["ent_step"])) for s in common)
            x = runs[common[0]]["ent_step"][:n]
            for ax, key in ((axs[0], "ent_layer"), (axs[1], "ent_cos_to_top")):
                if key not in runs[common[0]]:
                    continue
                D = np.array([runs[s][key][:n, l] - base_runs[s][key][:n, l] for s in common])
                ax.plot(x, D.mean(axis=0), color=colour[v], label=f"{v} (π^{l}, s_inter {s_int})")
        axs[0].set_ylabel(f"Δ H(H^l) vs {a.baseline}, nats")
        axs[1].set_ylabel(f"Δ cos(H^l, H^L) vs {a.baseline}")
        for ax in axs:
            ax.axhline(0, color="k", lw=0.8)
            ax.set_xlabel("training step")
            ax.legend(fontsize=7)
        fig.suptitle("BuPO variants minus the baseline, same seed (mean over seeds)", fontsize=9)
        save(fig, "compare_layers")
    print("figures: " + ", ".join(figs))


if __name__ == "__main__":
    main()
