#!/usr/bin/env python3
"""bupo's graders against the papers' reference Python, on the 5,600 ground truths of
../shared/data/math (papers.md §1.8 and §2.3).

  1. `bupo verify --grader math --mode verl` must give verl's math.compute_score (verl 0.5.0 =
     BuPO d3a85c6's file) on every case: the ground truth boxed as it is and in a dozen forms a
     model writes (\\dfrac, $...$, "x = ", spaces, \\fbox, 0.50, 1,000, +5, a wrong digit, ...).
     The extended mode must score 1 wherever verl does, except on a last \\fbox{} (verl: 0).
  2. `--grader math_dapo`: its extracted, normalised answer must equal the `pred` of verl 0.5.0's
     Minerva grader (is_correct_minerva, the same code as HAPO 7671dde's) on every case, and its
     score HAPO's compute_score wherever the Minerva comparison decides; where HAPO asks
     math_verify (math-verify 0.9.0), bupo's numeric stand-in must never score +1 where
     math_verify says -1. How often it agrees is printed.

Usage: check_graders.py BUPO SHARED_DIR GRADERS_DIR [--sample F]
  --sample F: ask math_verify on a fraction F of the fallback cases (default 0.02, as ctest runs
  it: math_verify takes ~3 ms a case; 1 for all of them). Exit 77 when the references are absent.
"""
import contextlib
import importlib.util
import io
import json
import logging
import os
import random
import subprocess
import sys
import time


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def ground_truths(shared):
    out = []
    for name in ("deepmath-5k", "math500", "amc2023", "aime_2024", "aime_2025"):
        with open(os.path.join(shared, "data", "math", name + ".jsonl"), encoding="utf-8") as f:
            for line in f:
                gt = json.loads(line)["reward_model"]["ground_truth"]
                out.append(gt if isinstance(gt, str) else str(gt))
    return out


def variants(gt, other, rng):
    """Answers a model writes for ground truth gt (other: a different ground truth)."""
    v = [gt, " " + gt + " ", gt.replace("\\frac", "\\dfrac"), "$" + gt + "$", "x = " + gt,
         gt + ".", gt.replace(" ", ""), "\\text{" + gt + "}", gt + "\\%", gt + "%", other,
         gt.replace("\\left", "").replace("\\right", "")]
    if gt.lstrip("-").isdigit():
        n = int(gt)
        v += [gt + ".0", "+" + gt, f"{n:,}", str(n + 1), gt + "/1", f"{n}.00"]
    if gt.startswith("\\frac{") or "/" in gt:
        v += [gt.replace("\\frac{", "\\frac").replace("}{", "").rstrip("}")]
    if gt:
        i = rng.randrange(len(gt))
        v.append(gt[:i] + gt[i + 1:])  # one character dropped
    return v


def run_bupo(bupo, rows, *args):
    payload = "".join(json.dumps(r) + "\n" for r in rows)
    p = subprocess.run([bupo, "verify", *args], input=payload.encode(), capture_output=True,
                       timeout=600)
    if p.returncode != 0:
        sys.exit(f"bupo verify {' '.join(args)} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    out = [json.loads(l) for l in p.stdout.decode().splitlines()]
    assert len(out) == len(rows), (len(out), len(rows))
    return out


def main():
    args = sys.argv[1:]
    sample = 0.02
    if len(args) == 5 and args[3] == "--sample":
        sample = float(args[4])
        args = args[:3]
    if len(args) != 3 or not 0 < sample <= 1:
        sys.exit(__doc__)
    bupo, shared, graders = args
    try:
        verl_math = load("verl_math", os.path.join(graders, "math.py"))
        verl_dapo = load("verl_math_dapo", os.path.join(graders, "math_dapo.py"))
        from math_verify.metric import math_metric
        from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig
        logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # its per-case complaints
    except (OSError, ImportError) as e:
        print(f"SKIP: the reference graders are not installed ({e}); run env/setup.sh")
        sys.exit(77)
    rng = random.Random(1)
    gts = ground_truths(shared)
    assert len(gts) == 5600, len(gts)

    # ---- 1. math, verl mode and extended mode
    rows, want = [], []
    for i, gt in enumerate(gts):
        other = gts[(i * 7919 + 1) % len(gts)]
        for a in variants(gt, other, rng):
            for resp in ("So the answer is \\boxed{" + a + "}.", "\\fbox{" + a + "}",
                         "\\boxed " + a + "$ done"):
                rows.append({"response": resp, "ground_truth": gt})
    t0 = time.time()
    with contextlib.redirect_stdout(io.StringIO()):  # compute_score prints what it catches
        for r in rows:
            want.append(verl_math.compute_score(r["response"], r["ground_truth"]))
    t_py = time.time() - t0
    t0 = time.time()
    got_verl = run_bupo(bupo, rows, "--grader", "math", "--mode", "verl")
    got_ext = run_bupo(bupo, rows, "--grader", "math", "--mode", "extended")
    t_bupo = time.time() - t0
    bad = [(r, w, g["score"]) for r, w, g in zip(rows, want, got_verl) if w != g["score"]]
    for r, w, g in bad[:10]:
        print(f"MISMATCH math/verl: verl {w} bupo {g}: {json.dumps(r)[:300]}")
    ext_lower = [(r, w) for r, w, g in zip(rows, want, got_ext)
                 if w == 1 and g["score"] != 1 and not r["response"].startswith("\\fbox")]
    for r, w in ext_lower[:10]:
        print(f"EXTENDED BELOW VERL: {json.dumps(r)[:300]}")
    more = sum(1 for r, w, g in zip(rows, want, got_ext)
               if g["score"] == 1 and w == 0 and not r["response"].startswith("\\fbox"))
    print(f"math: {len(rows)} cases over {len(gts)} ground truths; verl mode = verl's "
          f"compute_score on {len(rows) - len(bad)} of {len(rows)}; extended scores 1 on {more} "
          f"more (not counting \\fbox) ({t_py:.1f} s Python, {t_bupo / 2:.1f} s bupo per mode)")

    # ---- 2. math_dapo
    verify_func = math_metric(gold_extraction_target=(LatexExtractionConfig(),),
                              pred_extraction_target=(ExprExtractionConfig(), LatexExtractionConfig()))

    def math_verify_says(pred, gt):  # HAPO's compute_score_for_dapo
        try:
            score, _ = verify_func(["\\boxed{" + gt + "}"], ["\\boxed{" + pred + "}"])
            return score > 0
        except Exception:
            return False

    rows = []
    for i, gt in enumerate(gts):
        other = gts[(i * 104729 + 3) % len(gts)]
        vs = variants(gt, other, rng)
        parts = gt[6:-1].split("}{") if gt.startswith("\\frac{") and gt.endswith("}") else []
        if len(parts) == 2:  # numeric forms of a fraction
            a, b = parts
            if a.lstrip("-").isdigit() and b.isdigit() and int(b) != 0:
                vs += [f"{int(a) / int(b):.6f}", f"{int(a) / int(b):.3f}", f"{a}/{b}"]
        for a in vs:
            for resp in ("Reasoning...\nAnswer: " + a, "answer : $" + a + "$\n",
                         "x" * 290 + "\nAnswer: " + a, "\\boxed{" + a + "}"):
                rows.append({"response": resp, "ground_truth": gt, "data_source": "math_dapo"})
    got = run_bupo(bupo, rows, "--grader", "by_data_source", "--reward", "pm1")
    pred_bad, decided_bad, fb = [], [], {"asked": 0, "agree": 0, "bupo_only": 0, "mv_only": 0}
    mv_rng = random.Random(2)
    t_mv = 0.0
    for r, g in zip(rows, got):
        tail = r["response"][-300:]
        correct, pred = verl_dapo.is_correct_minerva(tail, r["ground_truth"])
        if (g["answer"] if g["answer"] is not None else "[INVALID]") != pred:
            pred_bad.append((r, pred, g["answer"]))
            continue
        if correct or pred == "[INVALID]":
            if g["score"] != (1.0 if correct else -1.0):
                decided_bad.append((r, correct, g["score"]))
            continue
        # HAPO asks math_verify; it is slow (sympy): a deterministic sample
        if mv_rng.random() >= sample:
            continue
        t0 = time.time()
        mv = math_verify_says(pred, r["ground_truth"])
        t_mv += time.time() - t0
        fb["asked"] += 1
        bupo_plus = g["score"] == 1.0
        fb["agree"] += mv == bupo_plus
        fb["bupo_only"] += bupo_plus and not mv
        fb["mv_only"] += mv and not bupo_plus
        if os.environ.get("BUPO_GRADERS_SHOW_MISSES") and mv and not bupo_plus:
            print(f"MISS: pred {pred!r} gt {r['ground_truth']!r}")
        if bupo_plus and not mv:
            print(f"FALLBACK +1 WHERE math_verify SAYS -1: pred {pred!r} gt {r['ground_truth']!r}")
    for r, p, g in pred_bad[:10]:
        print(f"MISMATCH math_dapo pred: verl {p!r} bupo {g!r}: {json.dumps(r)[-200:]}")
    for r, c, g in decided_bad[:10]:
        print(f"MISMATCH math_dapo score: verl {c} bupo {g}: {json.dumps(r)[-200:]}")
    print(f"math_dapo: {len(rows)} cases; normalised answer = verl's pred on "
          f"{len(rows) - len(pred_bad)}; Minerva verdicts equal on all but {len(decided_bad)}; "
          f"fallback asked on {fb['asked']} (a sample of {sample:g}; math_verify {t_mv:.1f} s): "
          f"agrees {fb['agree']}, "
          f"+1 only by bupo {fb['bupo_only']}, +1 only by math_verify {fb['mv_only']}")
    failed = bad or ext_lower or pred_bad or decided_bad or fb["bupo_only"]
    print("FAILED" if failed else "OK")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
