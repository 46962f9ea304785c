#!/usr/bin/env python3
"""A scaling study of `bupo train`: one run per point of a grid of layouts, under one study folder.

Each point (tp, pp, dp, micro-batches m, nodes) runs the same configuration for a few steps, either
locally under mpirun or as one Slurm job (jobs/slurm/train.sbatch), into STUDY/<point>/run/, with
its parameters in STUDY/<point>/point.json and, once finished, as attributes of its
diagnostics.h5 (`study_point`, JSON, and `study_tp`, `study_pp`, ...). Re-running the same command
skips the finished points (metrics.jsonl holds every step) and, under Slurm, the points whose job is
still queued or running; a point bupo refused (a layout the model cannot take) keeps its log in
STUDY/<point>/FAILED and is not retried unless --retry-failed. analysis/scaling.py reads the
folder.

  jobs/scaling/sweep.py --study out/scaling --tp 1,2 --pp 1,2 --dp 1,2 --micro 4 --max-ranks 4
  jobs/scaling/sweep.py --study out/bubble --pp 2 --micro 1,2,4,8
  jobs/scaling/sweep.py --study out/weak --dp 1,2,4 --micro 4 --weak
  jobs/scaling/sweep.py --study /scratch/s --tp 4,8 --pp 1,2,4 --nodes 1,2,4 --mode slurm \\
      --config configs/qwen3-4b-bupo.toml --tasks-per-node 8 --cpus-per-task 4

m is the number of micro-batches per mini-batch (trainer.micro_batch_seqs = mini-batch sequences /
m); dp must divide it. --weak grows the problem with dp (prompts per step and per mini-batch times
dp): weak scaling; otherwise the global problem is fixed: strong scaling.
"""
import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def int_list(s):
    try:
        out = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{s}': expected comma-separated integers, e.g. 1,2,4")
    if not out or any(x < 1 for x in out):
        raise argparse.ArgumentTypeError(f"'{s}': expected integers >= 1")
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--study", required=True, help="study folder (created; re-used on a re-run)")
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "default.toml"))
    p.add_argument("--tp", type=int_list, default=[1])
    p.add_argument("--pp", type=int_list, default=[1])
    p.add_argument("--dp", type=int_list, default=[1])
    p.add_argument("--micro", type=int_list, default=[4], help="micro-batches per mini-batch")
    p.add_argument("--nodes", type=int_list, default=[1])
    p.add_argument("--zero", type=int_list, default=[0], help="parallel.zero values (0,1)")
    p.add_argument("--max-ranks", type=int, default=0, help="skip points with more ranks (0: none)")
    p.add_argument("--steps", type=int, default=4, help="training steps per point")
    p.add_argument("--weak", action="store_true", help="grow prompts per step with dp")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every point (repeatable)")
    p.add_argument("--mode", choices=["local", "slurm"], default="local")
    p.add_argument("--bupo", default=os.environ.get("BUPO", os.path.join(ROOT, "build", "release", "bupo")))
    p.add_argument("--mpirun", default=os.environ.get("MPIRUN", "mpirun"))
    p.add_argument("--threads", type=int, default=1, help="OMP threads per rank (local mode)")
    p.add_argument("--tasks-per-node", type=int, default=0, help="Slurm: ranks per node (0: ranks/nodes)")
    p.add_argument("--cpus-per-task", type=int, default=1, help="Slurm: CPUs per rank")
    p.add_argument("--time", default="01:00:00", help="Slurm: time limit per point")
    p.add_argument("--retry-failed", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the points and commands only")
    a = p.parse_args(argv)
    if a.steps < 2:
        p.error("--steps must be >= 2 (the analysis leaves out the first step)")
    if any(z not in (0, 1) for z in a.zero):
        p.error("--zero takes 0 and/or 1")
    return a


def load_config(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        sys.exit(f"sweep: --config {path}: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        sys.exit(f"sweep: --config {path}: not valid TOML: {e}")


def overrides_of(args):
    out = {}
    for kv in args.set:
        k, sep, v = kv.partition("=")
        if not sep or not k.strip():
            sys.exit(f"sweep: --set '{kv}': expected KEY=VALUE")
        out[k.strip()] = v.strip()
    return out


def batch_of(cfg, over):
    """(prompts per step, mini-batch prompts, samples per prompt) with the overrides applied."""
    def get(key, section, name, default):
        v = over[key] if key in over else cfg.get(section, {}).get(name, default)
        try:
            return int(v)
        except (TypeError, ValueError):
            sys.exit(f"sweep: {key} = {v!r}: expected an integer")
    return (get("trainer.prompts_per_step", "trainer", "prompts_per_step", 8),
            get("trainer.mini_batch_prompts", "trainer", "mini_batch_prompts", 8),
            get("rollout.n", "rollout", "n", 4))


def points(args, cfg, over):
    P, B, n = batch_of(cfg, over)
    for tp, pp, dp, m, nodes, zero in itertools.product(args.tp, args.pp, args.dp, args.micro,
                                                        args.nodes, args.zero):
        ranks = tp * pp * dp
        if args.max_ranks and ranks > args.max_ranks:
            continue
        if ranks % nodes or (zero and dp == 1):
            continue
        scale = dp if args.weak else 1
        seqs = B * scale * n
        if m % dp or seqs % m:
            print(f"sweep: skip tp={tp} pp={pp} dp={dp} m={m}: dp must divide m and m the "
                  f"{seqs} sequences of a mini-batch", file=sys.stderr)
            continue
        yield {"tp": tp, "pp": pp, "dp": dp, "micro_batches": m, "nodes": nodes, "ranks": ranks,
               "zero": zero, "weak": args.weak, "prompts_per_step": P * scale,
               "mini_batch_prompts": B * scale, "micro_batch_seqs": seqs // m,
               "samples_per_prompt": n, "steps": args.steps,
               "config": os.path.abspath(args.config)}


def name_of(pt):
    z = f"_z{pt['zero']}" if pt["zero"] else ""
    return (f"tp{pt['tp']}_pp{pt['pp']}_dp{pt['dp']}_m{pt['micro_batches']}_n{pt['nodes']}{z}"
            + ("_weak" if pt["weak"] else ""))


def settings(pt, run_dir, over):
    s = dict(over)
    s.update({"parallel.tp": pt["tp"], "parallel.pp": pt["pp"], "parallel.dp": pt["dp"],
              "parallel.zero": pt["zero"], "trainer.steps": pt["steps"],
              "trainer.prompts_per_step": pt["prompts_per_step"],
              "trainer.mini_batch_prompts": pt["mini_batch_prompts"],
              "trainer.micro_batch_seqs": pt["micro_batch_seqs"],
              "trainer.out_dir": json.dumps(run_dir)})
    return [f"{k}={v}" for k, v in s.items()]


def steps_done(run_dir):
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 0


def annotate(pt, run_dir):
    """The point's parameters as attributes of its diagnostics.h5 (once)."""
    path = os.path.join(run_dir, "diagnostics.h5")
    try:
        import h5py
    except ImportError:
        return
    try:
        with h5py.File(path, "a") as f:
            if "study_point" in f.attrs:
                return
            f.attrs["study_point"] = json.dumps(pt)
            for k in ("tp", "pp", "dp", "micro_batches", "nodes", "ranks", "zero"):
                f.attrs[f"study_{k}"] = int(pt[k])
    except OSError as e:
        print(f"sweep: {path}: cannot add the point's attributes: {e}", file=sys.stderr)


def slurm_job_active(point_dir):
    try:
        with open(os.path.join(point_dir, "slurm_job")) as f:
            job = f.read().strip()
    except OSError:
        return False
    r = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip() != ""


def run_local(args, pt, point_dir, run_dir, sets):
    cmd = [args.mpirun, "--oversubscribe"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += ["-np", str(pt["ranks"]), os.path.abspath(args.bupo), "--threads", str(args.threads), "train", "-c",
            pt["config"], "-q", "--overwrite"]
    for s in sets:
        cmd += ["--set", s]
    if args.dry_run:
        print(" ".join(cmd))
        return True
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMPI_MCA_mpi_yield_when_idle="1")
    log = os.path.join(point_dir, "run.log")
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        shutil.copyfile(log, os.path.join(point_dir, "FAILED"))
        with open(log) as f:
            lines = f.read().splitlines()
        # bupo's own message ("bupo: error ...") first: mpirun's abort notice ("... with errorcode
        # 1.") can reach the log before it when the ranks' output interleaves.
        tail = ([l for l in lines if l.startswith("bupo: ") and "error" in l] or
                [l for l in lines if "error" in l])[:1]
        print(f"sweep: {name_of(pt)}: bupo exited {rc}: {tail[0] if tail else 'see ' + log}",
              file=sys.stderr)
        return False
    return True


def submit_slurm(args, pt, point_dir, sets):
    """True once submitted (or printed, --dry-run)."""
    set_file = os.path.join(point_dir, "overrides.txt")
    per_node = args.tasks_per_node or pt["ranks"] // pt["nodes"]
    if args.dry_run:
        print(f"# {set_file}: " + "  ".join(sets))
    else:
        with open(set_file, "w") as f:
            f.write("\n".join(sets) + "\n")
    cmd = ["sbatch", "--parsable", "-J", f"scal-{name_of(pt)}", "-N", str(pt["nodes"]),
           f"--ntasks-per-node={per_node}", "-c", str(args.cpus_per_task), "-t", args.time,
           "-o", os.path.join(point_dir, "slurm-%j.out"),
           f"--export=ALL,CONFIG={pt['config']},SET_FILE={set_file},BUPO_ROOT={ROOT},"
           f"BUPO={os.path.abspath(args.bupo)}",
           os.path.join(ROOT, "jobs", "slurm", "train.sbatch")]
    if args.dry_run:
        print(" ".join(cmd))
        return True
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"sweep: {name_of(pt)}: sbatch failed: {r.stderr.strip()}", file=sys.stderr)
        return False
    with open(os.path.join(point_dir, "slurm_job"), "w") as f:
        f.write(r.stdout.strip().split(";")[0] + "\n")
    print(f"sweep: {name_of(pt)}: submitted job {r.stdout.strip()}")
    return True


def main(argv):
    args = parse_args(argv)
    cfg, over = load_config(args.config), overrides_of(args)
    if args.mode == "local" and not args.dry_run and not os.access(args.bupo, os.X_OK):
        sys.exit(f"sweep: --bupo {args.bupo}: not an executable (build it, or set BUPO)")
    if not args.dry_run:
        os.makedirs(args.study, exist_ok=True)
    counts = {"done": 0, "ran": 0, "submitted": 0, "planned": 0, "failed": 0, "waiting": 0,
              "skipped": 0}
    for pt in points(args, cfg, over):
        per_node = args.tasks_per_node or pt["ranks"] // pt["nodes"]
        if args.mode == "slurm" and per_node * pt["nodes"] != pt["ranks"]:
            print(f"sweep: {name_of(pt)}: {pt['ranks']} ranks do not fill {pt['nodes']} node(s) of "
                  f"{per_node} tasks; skipped", file=sys.stderr)
            counts["skipped"] += 1
            continue
        point_dir = os.path.join(os.path.abspath(args.study), name_of(pt))
        run_dir = os.path.join(point_dir, "run")
        if steps_done(run_dir) >= pt["steps"]:
            annotate(pt, run_dir)
            counts["done"] += 1
            continue
        if os.path.exists(os.path.join(point_dir, "FAILED")) and not args.retry_failed:
            counts["failed"] += 1
            continue
        if args.mode == "slurm" and slurm_job_active(point_dir):
            counts["waiting"] += 1
            continue
        sets = settings(pt, run_dir, over)
        if not args.dry_run:
            os.makedirs(point_dir, exist_ok=True)
            if os.path.exists(os.path.join(point_dir, "FAILED")):  # --retry-failed
                os.remove(os.path.join(point_dir, "FAILED"))
            with open(os.path.join(point_dir, "point.json"), "w") as f:
                json.dump(pt, f, indent=1)
        if args.mode == "local":
            ok = run_local(args, pt, point_dir, run_dir, sets)
            if ok and not args.dry_run:
                annotate(pt, run_dir)
                print(f"sweep: {name_of(pt)}: done")
        else:
            ok = submit_slurm(args, pt, point_dir, sets)
        counts[("planned" if args.dry_run else "ran" if args.mode == "local" else "submitted")
               if ok else "failed"] += 1
    print("sweep: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f" ({args.study})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
