#!/usr/bin/env python3
"""The multi-seed study of docs/experiments.md: BuPO against its baselines and its own variants on the
built-in task, several seeds each, one `bupo train` per (variant, seed) under one study folder.

  jobs/experiments/study.py --study out/study [--seeds 1,2,3,4,5] [--variants grpo,bupo,...]
                            [--jobs 2] [--bupo build/release/bupo] [--config configs/experiments/base.toml]
                            [--set KEY=VALUE ...] [--list]

Every run is STUDY/<variant>/seed_<s>/ (a bupo run folder: diagnostics.h5, metrics.jsonl) started as
  bupo --threads T train -c CONFIG --set <the variant's keys> --set model.init.seed=s data.seed=s
       trainer.seed=s --set trainer.out_dir=...
so a seed changes the initialisation, the data order and the rollouts. STUDY/<variant>/variant.json
records the keys. Re-running the command skips finished runs (metrics.jsonl holds trainer.steps
lines) and restarts unfinished ones from scratch (--overwrite). --jobs runs that many at once with
--threads 1 each (default: as many as cores). analysis/compare.py STUDY reads the folder.
"""
import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import time
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name -> (what it is, overrides). BuPO's defaults (configs/experiments/base.toml): pi^2 of 4 layers
# for s_inter = 5 of 20 steps, raw lens.
NO_BUPO = ["bupo.internal_layer=0", "bupo.internal_steps=0"]
VARIANTS = {
    "grpo": ("GRPO (the full policy from step 1)", NO_BUPO),
    "bupo": ("BuPO, pi^2 for s_inter = 5 steps, then GRPO", []),
    "rloo": ("RLOO (leave-one-out baseline)", NO_BUPO + ["algorithm.adv_estimator=\"rloo\""]),
    "reinforce_pp": ("REINFORCE++ (batch-whitened returns, k1 KL 0.001 in the reward)",
                     NO_BUPO + ["algorithm.adv_estimator=\"reinforce_plus_plus\"",
                                "algorithm.kl_in_reward=true", "algorithm.kl_coef=0.001",
                                "algorithm.kl_estimator=\"k1\""]),
    # the paper's critic lr is 10x its actor's (1e-5 vs 1e-6, papers.md §1.7): here 1e-3 vs 1e-4
    "ppo": ("PPO (learned critic from the warm-started policy, GAE gamma = lambda = 1, critic lr 1e-3)",
            NO_BUPO + ["algorithm.adv_estimator=\"gae\"", "critic.lr=1e-3"]),
    "dapo": ("DAPO (clip-higher 0.28, dynamic sampling)",
             NO_BUPO + ["algorithm.clip_high=0.28", "algorithm.dynamic_sampling=true"]),
    "hapo": ("HAPO (A-D: adaptive temperature, token advantage, redistribution, adaptive clip)",
             NO_BUPO + ["hapo.adaptive_temperature=true", "hapo.token_advantage=true",
                        "hapo.redistribution=true", "hapo.adaptive_clip=true"]),
    "bupo_s10": ("BuPO, s_inter = 10 (Table 2)", ["bupo.internal_steps=10"]),
    "bupo_sall": ("BuPO, s_inter = all 20 steps (Fig. 4)", ["bupo.internal_steps=20"]),
    "bupo_l1": ("BuPO, pi^1 (Table 3)", ["bupo.internal_layer=1"]),
    "bupo_l3": ("BuPO, pi^3 (Table 3)", ["bupo.internal_layer=3"]),
    "bupo_normed": ("BuPO, normed lens (Table 5)", ["bupo.lens=\"normed\""]),
}


def finished(run, steps):
    try:
        with open(os.path.join(run, "metrics.jsonl")) as f:
            return sum(1 for line in f if line.strip()) >= steps
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study")
    ap.add_argument("--seeds", default="1,2,3,4,5")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--bupo", default=os.path.join(ROOT, "build/release/bupo"))
    ap.add_argument("--config", default=os.path.join(ROOT, "configs/experiments/base.toml"))
    ap.add_argument("--set", action="append", default=[], help="a key for every run (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the variants and exit")
    a = ap.parse_args()
    if a.list:
        for k, (what, ov) in VARIANTS.items():
            print(f"{k:14} {what}\n{'':14} {' '.join(ov) or '(the base config)'}")
        return
    if not a.study:
        sys.exit("--study DIR is required")
    try:
        seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    except ValueError:
        sys.exit(f"--seeds '{a.seeds}': expected comma-separated integers")
    variants = [v for v in a.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not seeds:
        sys.exit(f"unknown variant(s) {unknown} (known: {', '.join(VARIANTS)})" if unknown else "no seeds")
    if not os.access(a.bupo, os.X_OK):
        sys.exit(f"--bupo {a.bupo}: not an executable (build it: cmake --build --preset release)")
    with open(a.config, "rb") as f:
        steps = int(tomllib.load(f).get("trainer", {}).get("steps", 0)) or sys.exit(f"{a.config}: no trainer.steps")
    for s in a.set:
        if s.startswith("trainer.steps="):
            steps = int(s.split("=", 1)[1])
    todo = []
    for v in variants:
        os.makedirs(os.path.join(a.study, v), exist_ok=True)
        with open(os.path.join(a.study, v, "variant.json"), "w") as f:
            json.dump({"name": v, "what": VARIANTS[v][0], "overrides": VARIANTS[v][1],
                       "common": a.set, "config": os.path.abspath(a.config)}, f, indent=1)
        for s in seeds:
            run = os.path.abspath(os.path.join(a.study, v, f"seed_{s}"))
            if not finished(run, steps):
                todo.append((v, s, run))
    print(f"study: {len(variants) * len(seeds) - len(todo)} done, {len(todo)} to run ({a.jobs} at a time)")
    threads = 1 if a.jobs > 1 else 0

    def one(item):
        v, s, run = item
        cmd = [a.bupo, "--threads", str(threads), "train", "-c", a.config, "-q", "--overwrite"]
        for ov in VARIANTS[v][1] + a.set + [f"model.init.seed={s}", f"data.seed={s}", f"trainer.seed={s}",
                                            f"trainer.out_dir={json.dumps(run)}"]:
            cmd += ["--set", ov]
        t0 = time.time()
        os.makedirs(run, exist_ok=True)
        with open(run + ".log", "w") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        return v, s, rc, time.time() - t0

    failed = 0
    with cf.ThreadPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        for v, s, rc, dt in ex.map(one, todo):
            print(f"  {v} seed {s}: {'ok' if rc == 0 else f'FAILED (exit {rc}, see seed_{s}.log)'} {dt:.0f} s",
                  flush=True)
            failed += rc != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
