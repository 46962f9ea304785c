#!/usr/bin/env python3
"""Strong/weak scaling, stage times and the pipeline bubble of a study folder (jobs/scaling/sweep.py).

  analysis/scaling.py STUDY [STUDY...] [--out DIR] [--format png|pdf] [--markdown]

Per point, from its metrics.jsonl, the means over steps 2..K (step 1 pays one-time costs):
tokens/s (tokens of the step over time_step), the time of each stage of the step (rollout, reward,
old log-prob, update, diagnostics, validation, log write), the pipeline bubble measured during the
update (pp_bubble_measured: receive-wait over the update's wall time, summed over the stages) next to
1F1B's (p-1)/(m+p-1), and communication per step and group (bytes, calls: every rank's counters
summed). Efficiency: strong scaling (same global problem) = (tokens/s at N ranks) / (N/N0 · tokens/s
at the smallest N0); weak scaling (--weak studies, problem grown with dp) = the same ratio, which then
reads as per-rank throughput kept. Prints the table (--markdown: as a Markdown table) and writes
scaling_strong, scaling_weak, scaling_stages and scaling_bubble figures to --out (default: the first
study folder) for whichever of them the points support.
"""
import argparse
import json
import math
import os
import sys

STAGES = ["time_rollout", "time_reward", "time_old_logprob", "time_update", "time_diagnostics",
          "time_validation", "time_log_write_prev"]


def load_point(point_dir):
    try:
        with open(os.path.join(point_dir, "point.json")) as f:
            pt = json.load(f)
        with open(os.path.join(point_dir, "run", "metrics.jsonl")) as f:
            rows = [json.loads(l) for l in f if l.strip()]
    except (OSError, json.JSONDecodeError):
        return None
    if len(rows) < pt.get("steps", 2) or len(rows) < 2:
        return None  # unfinished
    rows = rows[1:]
    def mean(key):
        v = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
        return sum(v) / len(v) if v else float("nan")
    out = dict(pt)
    out["name"] = os.path.basename(point_dir)
    out["time_step"] = mean("time_step")
    out["tokens"] = mean("tokens")
    out["tokens_per_s"] = out["tokens"] / out["time_step"] if out["time_step"] > 0 else float("nan")
    for k in STAGES:
        out[k] = mean(k)
    out["bubble_measured"] = mean("pp_bubble_measured")
    out["bubble_1f1b"] = mean("pp_bubble_1f1b")
    for g in ("tp", "pp", "dp"):
        out[f"comm_{g}_bytes"] = mean(f"comm_{g}_bytes")
        out[f"comm_{g}_calls"] = mean(f"comm_{g}_calls")
    return out


def load_study(paths):
    pts = []
    for study in paths:
        if not os.path.isdir(study):
            sys.exit(f"scaling: {study}: not a folder (a study folder of jobs/scaling/sweep.py)")
        for name in sorted(os.listdir(study)):
            d = os.path.join(study, name)
            if os.path.isdir(d) and os.path.exists(os.path.join(d, "point.json")):
                p = load_point(d)
                if p is None:
                    print(f"scaling: {d}: unfinished or unreadable, left out", file=sys.stderr)
                else:
                    pts.append(p)
    if not pts:
        sys.exit("scaling: no finished points in " + ", ".join(paths))
    return pts


def add_efficiency(pts):
    # a series: the same problem family (config, weak or not, micro-batches, ZeRO); its base is
    # its point with the fewest ranks
    series = {}
    for p in pts:
        series.setdefault((p["config"], p["weak"], p["micro_batches"], p["zero"]), []).append(p)
    for ps in series.values():
        base = min(ps, key=lambda q: (q["ranks"], -q["tokens_per_s"]))
        for p in ps:
            p["speedup"] = p["tokens_per_s"] / base["tokens_per_s"]
            p["efficiency"] = p["speedup"] / (p["ranks"] / base["ranks"])
    return series


def fmt(x, spec):
    return "—" if isinstance(x, float) and math.isnan(x) else format(x, spec)


def table(pts, markdown):
    cols = [("point", "name", "s"), ("ranks", "ranks", "d"), ("tok/s", "tokens_per_s", ".0f"),
            ("eff", "efficiency", ".2f"), ("step s", "time_step", ".3f"),
            ("rollout", "time_rollout", ".3f"), ("old lp", "time_old_logprob", ".3f"),
            ("update", "time_update", ".3f"), ("diag", "time_diagnostics", ".3f"),
            ("bubble", "bubble_measured", ".3f"), ("(p-1)/(m+p-1)", "bubble_1f1b", ".3f"),
            ("TP MB", "comm_tp_bytes", ".2f"), ("TP calls", "comm_tp_calls", ".0f"),
            ("PP MB", "comm_pp_bytes", ".2f"), ("PP calls", "comm_pp_calls", ".0f"),
            ("DP MB", "comm_dp_bytes", ".2f"), ("DP calls", "comm_dp_calls", ".0f")]
    rows = []
    for p in sorted(pts, key=lambda q: (q["weak"], q["ranks"], q["name"])):
        r = []
        for _, k, spec in cols:
            v = p[k] / 1e6 if k.endswith("_bytes") else p[k]
            r.append(fmt(v, spec) if spec != "s" else v)
        rows.append(r)
    head = [c[0] for c in cols]
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        print("  ".join(h.rjust(w[i]) for i, h in enumerate(head)))
        for r in rows:
            print("  ".join(c.rjust(w[i]) for i, c in enumerate(r)))


def figures(pts, series, out, fmt_ext):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    written = []

    def save(fig, name):
        fig.tight_layout()
        path = os.path.join(out, f"{name}.{fmt_ext}")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)

    for weak in (False, True):
        ss = [ps for (cfg, w, m, z), ps in series.items() if w == weak and len({q["ranks"] for q in ps}) > 1]
        if not ss:
            continue
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for ps in ss:
            by = {}
            for p in ps:  # the best layout at each rank count
                if p["ranks"] not in by or p["tokens_per_s"] > by[p["ranks"]]["tokens_per_s"]:
                    by[p["ranks"]] = p
            n = sorted(by)
            lab = f"m={ps[0]['micro_batches']}" + (" ZeRO-1" if ps[0]["zero"] else "")
            a1.plot(n, [by[k]["tokens_per_s"] for k in n], "o-", label=lab)
            a1.plot(n, [by[n[0]]["tokens_per_s"] * k / n[0] for k in n], "k:", lw=0.8)
            a2.plot(n, [by[k]["efficiency"] for k in n], "o-", label=lab)
            for k in n:
                a1.annotate(f"{by[k]['tp']}×{by[k]['pp']}×{by[k]['dp']}", (k, by[k]["tokens_per_s"]),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
        a1.set_xlabel("ranks")
        a1.set_ylabel("tokens / s (best tp×pp×dp; dotted: ideal)")
        a2.set_xlabel("ranks")
        a2.set_ylabel("weak-scaling efficiency" if weak else "strong-scaling efficiency")
        a2.axhline(1.0, color="k", lw=0.8, ls=":")
        a1.legend(fontsize=8)
        fig.suptitle("weak scaling (problem grows with dp)" if weak else "strong scaling (fixed problem)")
        save(fig, f"scaling_{'weak' if weak else 'strong'}")
    # stage times per point
    ps = sorted(pts, key=lambda q: (q["weak"], q["ranks"], q["name"]))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(ps) + 2), 4))
    bottom = [0.0] * len(ps)
    for k in STAGES:
        v = [0.0 if math.isnan(p[k]) else p[k] for p in ps]
        ax.bar(range(len(ps)), v, bottom=bottom, label=k.replace("time_", ""))
        bottom = [b + x for b, x in zip(bottom, v)]
    ax.set_xticks(range(len(ps)))
    ax.set_xticklabels([p["name"] for p in ps], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("seconds per step (mean of steps 2..K)")
    ax.legend(fontsize=7)
    save(fig, "scaling_stages")
    # the pipeline bubble against 1F1B's bound, over the micro-batches each replica pipelines
    bp = [p for p in pts if p["pp"] > 1 and not math.isnan(p["bubble_measured"])]
    if bp:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for pp in sorted({p["pp"] for p in bp}):
            by = {}
            for p in bp:
                if p["pp"] == pp:
                    by.setdefault(p["micro_batches"] // p["dp"], []).append(p["bubble_measured"])
            m = sorted(by)
            ax.plot(m, [sum(by[k]) / len(by[k]) for k in m], "o-", label=f"measured, p={pp}")
            ax.plot(m, [(pp - 1) / (k + pp - 1) for k in m], "k--", lw=0.8,
                    label=f"(p-1)/(m+p-1), p={pp}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("micro-batches per replica (m / dp)")
        ax.set_ylabel("idle fraction of the update")
        ax.legend(fontsize=8)
        save(fig, "scaling_bubble")
    return written


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study", nargs="+")
    ap.add_argument("--out", default=None)
    ap.add_argument("--format", choices=["png", "pdf"], default="png")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--no-figures", action="store_true")
    ap.add_argument("--json", default=None, help="also write the per-point table as JSON here")
    a = ap.parse_args(argv)
    pts = load_study(a.study)
    series = add_efficiency(pts)
    table(pts, a.markdown)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(pts, f, indent=1, default=float)
    if not a.no_figures:
        out = a.out or a.study[0]
        os.makedirs(out, exist_ok=True)
        for p in figures(pts, series, out, a.format):
            print(f"scaling: wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
