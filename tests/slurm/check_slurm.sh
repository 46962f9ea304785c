#!/usr/bin/env bash
# jobs/slurm/*.sbatch under a real Slurm (env/slurm-localhost.sh; ctest label `slurm`), submitted as
# an ordinary user. Exit 77 (skipped) when no Slurm answers here.
#   check_slurm.sh BUPO CASE
#   requeue   train.sbatch, 1 task: USR1 before the time limit -> checkpoint, exit 75, requeue,
#             --resume; the final weights and metrics equal an uninterrupted job's
#   tasks4    train.sbatch with 4 tasks (TP=2 x PP=2) completes
#   scancel   a plain scancel checkpoints and ends the job CANCELLED, not requeued
#   die       a rank that dies ends the job, the rank and host named
#   hang      a rank that hangs: the watchdog ends the job within parallel.timeout_s, naming them
#   entropy   entropy.sbatch as an array job over two checkpoints, and srun --mpi=pmix
#             bupo entropy --tp 2 equal to one rank; eval_sweep.sbatch over the same two
#   scaling   jobs/scaling/sweep.py --mode slurm submits one job per point (pp = 1, 2); once they
#             ran, a re-run finds them finished and analysis/scaling.py reads the study
set -uo pipefail
bupo=$(realpath "$1") case=$2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
user=${BUPO_SLURM_USER:-bupo-ci}
fail() { echo "FAIL ($case): $*"; exit 1; }
sinfo -h -o %t 2>/dev/null | grep -Eq '^(idle|mix|alloc)' ||
  { echo "no Slurm answers here (start it with: sudo env/slurm-localhost.sh up): skipped"; exit 77; }
# jobs run as an ordinary user; as that user already when not root
as_user() { if [ "$(id -u)" = 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi; }
work=$(mktemp -d /tmp/bupo-slurm-XXXXXX)
chmod 755 "$work"
# The job user may not see into this checkout (a clone under a private folder): the jobs run
# copies of the binary and of the batch scripts, from the work folder.
mkdir "$work/bin"
cp "$bupo" "$work/bin/bupo" && cp "$root"/jobs/slurm/*.sbatch "$work/bin/" || fail "cannot copy the binary"
chmod -R a+rX "$work/bin"
bupo=$work/bin/bupo
scripts=$work/bin
[ "$(id -u)" = 0 ] && chown "$user" "$work"
jobs_started=()
cleanup() {
  for j in "${jobs_started[@]}"; do as_user scancel "$j" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
field() { scontrol show job "$1" 2>/dev/null | grep -o "$2=[^ ]*" | head -1 | cut -d= -f2; }
# wait_state JOB TIMEOUT STATE...: until the job is in one of the states
wait_state() {
  local j=$1 t=$2 s held=0
  shift 2
  for _ in $(seq $((t * 5))); do
    s=$(field "$j" JobState)
    for want in "$@"; do [ "$s" = "$want" ] && return 0; done
    # a requeued job is held (BeginTime) about 2 minutes: release it after 3 s, once slurmd has
    # cleaned up the previous run's step (released at once, the new run's step 0 can race the old
    # step 0's teardown and fail to launch)
    if [ "$s" = PENDING ] && [ "$(field "$j" Reason)" = BeginTime ]; then
      held=$((held + 1))
      [ "$held" -ge 15 ] && as_user scontrol update jobid="$j" StartTime=now >/dev/null 2>&1
    fi
    sleep 0.2
  done
  fail "job $j is $s after ${t}s, expected $*; its log: $(cat "$work"/*-"$j".out 2>/dev/null | tail -20)"
}
# config FILE OUT_DIR STEPS [PARALLEL_TOML]: a tiny run whose rewards carry signal (warm start)
config() {
  cat >"$1" <<TOML
[model]
template = "plain"
init = { arch = "qwen3", layers = 2, hidden = 32, heads = 2, kv_heads = 1, head_dim = 16, ffn = 64, vocab_multiple = 8, seed = 3 }
[data]
train = "builtin:arithmetic"
arithmetic = { digits = 1, ops = "+", size = 100 }
[warmup]
sft_steps = 200
sft_batch = 16
sft_lr = 3e-3
[rollout]
n = 4
max_tokens = 12
[trainer]
steps = $3
prompts_per_step = 2
mini_batch_prompts = 2
micro_batch_seqs = 8
checkpoint_every = 0
export_hf = false
out_dir = "$2"
[diagnostics]
every = 0
[parallel]
${4:-}
TOML
  chmod 644 "$1"
}
# submit NAME TASKS CONFIG [sbatch options...]: the job id
submit() {
  local name=$1 n=$2 cfg=$3
  shift 3
  local j
  j=$(cd "$work" && as_user sbatch --parsable -J "$name" --ntasks-per-node="$n" -c 1 --time=00:15:00 \
        --output="$work/%x-%j.out" --export=ALL,CONFIG="$cfg",BUPO="$bupo",BUPO_ROOT="$root" "$@" \
        "$scripts/train.sbatch" 2>"$work/sbatch.err") || { cat "$work/sbatch.err"; return 1; }
  echo "$j"
}
wait_logged() {  # wait_logged JOB OUT_DIR: until OUT_DIR/metrics.jsonl holds a step
  local s
  for _ in $(seq 600); do
    [ -s "$2/metrics.jsonl" ] && return 0
    s=$(field "$1" JobState)
    case "$s" in PENDING|RUNNING|CONFIGURING) ;; *) fail "job $1 is $s before its first step: $(tail -20 "$work"/*-"$1".out 2>/dev/null)" ;; esac
    sleep 0.2
  done
  fail "no step logged in $2 within 120 s"
}
exact_metrics() {  # the metrics that do not depend on timing, one line per step
  "$root/.venv/bin/python" - "$1" <<'PY' || fail "cannot read $1 with the project's Python (env/setup.sh)"
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print({k: v for k, v in sorted(r.items()) if not k.startswith("time") and k != "tokens_per_s"})
PY
}

case "$case" in
requeue)
  config "$work/ref.toml" "$work/ref" 300
  config "$work/pre.toml" "$work/pre" 300
  ref=$(submit ref 1 "$work/ref.toml") || fail "sbatch refused the job"
  jobs_started+=("$ref")
  pre=$(submit pre 1 "$work/pre.toml") || fail "sbatch refused the job"
  jobs_started+=("$pre")
  wait_logged "$pre" "$work/pre"
  as_user scancel -b -s USR1 "$pre" || fail "scancel -s USR1 failed"
  wait_state "$ref" 240 COMPLETED
  wait_state "$pre" 240 COMPLETED
  [ "$(field "$pre" Restarts)" = 1 ] || fail "the job was not requeued once (Restarts=$(field "$pre" Restarts))"
  log=$(cat "$work"/pre-"$pre".out)
  grep -q "preempted by signal 10: stopped after step" <<<"$log" || fail "no orderly stop in the log: $log"
  grep -q "requeueing $pre" <<<"$log" || fail "the script did not requeue: $log"
  stop=$(grep -o "stopped after step [0-9]*" <<<"$log" | grep -o "[0-9]*$")
  [ "$stop" -lt 300 ] || fail "USR1 arrived after the run ended (step $stop): nothing was tested"
  for f in model.safetensors optimizer.bin; do
    cmp -s "$work/ref/checkpoints/step_00000300/$f" "$work/pre/checkpoints/step_00000300/$f" ||
      fail "$f after the requeue differs from the uninterrupted job's"
  done
  diff <(exact_metrics "$work/ref/metrics.jsonl") <(exact_metrics "$work/pre/metrics.jsonl") >/dev/null ||
    fail "metrics.jsonl after the requeue differs from the uninterrupted job's"
  echo "requeue: USR1 at step $stop -> exit 75, requeued, resumed; step 300 weights and 300 metric rows identical"
  ;;
tasks4)
  config "$work/t4.toml" "$work/t4" 1000 "tp = 2
pp = 2"
  # overrides from a file: a value with a comma, which sbatch --export would split
  printf '# overrides\ntrainer.steps=20\nrollout.stop = ["x,y", "zz"]\n' >"$work/sets.txt"
  chmod 644 "$work/sets.txt"
  j=$(submit t4 4 "$work/t4.toml" --export=ALL,CONFIG="$work/t4.toml",BUPO="$bupo",SET_FILE="$work/sets.txt") ||
    fail "sbatch refused the job"
  jobs_started+=("$j")
  wait_state "$j" 240 COMPLETED
  grep -q "tp 2 x pp 2 x dp 1 = 4 ranks" "$work"/t4-"$j".out || fail "not a 4-rank TP2xPP2 run: $(cat "$work"/t4-"$j".out)"
  [ "$(wc -l <"$work/t4/metrics.jsonl")" = 20 ] || fail "expected 20 metric rows (SET_FILE's trainer.steps)"
  grep -rq 'rollout.stop = .*x,y' "$work/t4/checkpoints" ||
    fail "SET_FILE's rollout.stop did not reach the run"
  echo "tasks4: 4 tasks (tp 2 x pp 2) under srun --mpi=pmix completed 20 steps, SET_FILE applied"
  ;;
scancel)
  config "$work/c.toml" "$work/c" 100000
  j=$(submit c 1 "$work/c.toml") || fail "sbatch refused the job"
  jobs_started+=("$j")
  wait_logged "$j" "$work/c"
  as_user scancel "$j"
  wait_state "$j" 120 CANCELLED
  sleep 1
  [ "$(field "$j" Restarts)" = 0 ] || fail "a plain scancel requeued the job"
  [ "$(field "$j" JobState)" = CANCELLED ] || fail "the job is $(field "$j" JobState) after scancel"
  ls "$work/c/checkpoints"/step_* >/dev/null 2>&1 || fail "no checkpoint after the SIGTERM of scancel"
  echo "scancel: CANCELLED, not requeued, checkpoint $(cat "$work/c/checkpoints/latest")"
  ;;
die | hang)
  # rank 1 dies or hangs at step 3 of a 2-stage pipeline under srun -K1
  config "$work/f.toml" "$work/f" 100000 "pp = 2
timeout_s = $([ "$case" = die ] && echo 20 || echo 5)
fault_inject = \"$case:1@3\""
  start=$(date +%s)
  j=$(submit f 2 "$work/f.toml") || fail "sbatch refused the job"
  jobs_started+=("$j")
  wait_state "$j" 120 FAILED COMPLETED CANCELLED
  took=$(($(date +%s) - start))
  log=$(cat "$work"/f-"$j".out)
  grep -q "fault injection: rank 1 (host [^)]*) ${case}s\{0,1\}[a-z]* at step 3" <<<"$log" ||
    fail "the fault was not announced: $log"
  [ "$(field "$j" JobState)" = FAILED ] || fail "the rank's $case left the job $(field "$j" JobState)"
  if [ "$case" = die ]; then
    grep -Eq "task 1: Exited with exit code|rank 1" <<<"$log" || fail "the dead rank is not named: $log"
    echo "die: the job FAILED ${took}s after submission with rank 1 named"
  else
    grep -Eq "bupo: rank 0 \(host [^)]+\): .* did not complete within 5 s" <<<"$log" ||
      fail "no watchdog message naming the waiting rank and its host: $log"
    [ "$took" -le 90 ] || fail "the job took ${took}s to end for a 5 s watchdog"
    echo "hang: the watchdog ended the job ${took}s after submission, naming rank 0 and its host"
  fi
  ;;
entropy)
  # two checkpoints of a tiny run (trained here, outside Slurm) and token rows for them
  config "$work/e.toml" "$work/e" 2
  sed -i 's/^checkpoint_every = 0/checkpoint_every = 1/' "$work/e.toml"
  as_user "$bupo" train -c "$work/e.toml" -q >"$work/e.out" 2>&1 || fail "the tiny run failed: $(cat "$work/e.out")"
  ls -d "$work"/e/checkpoints/step_* >"$work/ckpts.txt"
  for r in 0 1 2 3 4 5; do
    printf '{"ids": [%d, %d, %d, %d, %d, %d, %d, %d], "response_start": 3}\n' \
      $((r + 1)) $((r + 7)) $((r + 13)) $((r + 19)) $((r + 25)) $((r + 31)) $((r + 37)) $((r + 43))
  done >"$work/rows.jsonl"
  chmod 644 "$work/ckpts.txt" "$work/rows.jsonl"
  # the array job: one task per checkpoint (sbatch --wait returns the job's exit status)
  (cd "$work" && as_user sbatch --wait --parsable -J sweep --array=0-1 -c 1 --output="$work/%x-%A_%a.out" \
     --export=ALL,CKPTS="$work/ckpts.txt",DATA="$work/rows.jsonl",BUPO="$bupo" \
     "$scripts/entropy_sweep.sbatch" >"$work/sweep.id" 2>&1) ||
    fail "the array job failed: $(cat "$work"/sweep*.out "$work/sweep.id" 2>/dev/null | tail -20)"
  for c in step_00000001 step_00000002; do
    [ -s "$work/entropy/$c.h5" ] || fail "the array job wrote no entropy/$c.h5"
  done
  # one parallel job of 2 tasks (tp 2) against one task
  for n in 1 2; do
    (cd "$work" && as_user sbatch --wait -J "ent$n" --ntasks-per-node=$n -c 1 --output="$work/%x-%j.out" \
       --export=ALL,MODEL="$work/e/checkpoints/step_00000002",DATA="$work/rows.jsonl",OUT="$work/tp$n.h5",TP=$n,BUPO="$bupo" \
       "$scripts/entropy.sbatch" >/dev/null 2>&1) || fail "entropy.sbatch with $n tasks failed: $(cat "$work"/ent$n-*.out | tail -20)"
  done
  "$root/.venv/bin/python" - "$work/tp1.h5" "$work/tp2.h5" "$work/entropy/step_00000002.h5" <<'PY' || fail "tp 2 differs from one rank"
import sys, h5py, numpy as np
one, two, sweep = (h5py.File(p, "r") for p in sys.argv[1:])
n = int(one["progress"][0])
assert n == int(one.attrs["num_tokens"]) == int(two["progress"][0]) > 0, (n, two["progress"][:])
for ds in ("entropy/layer", "entropy/ffn_out", "logprob/output", "tokens/token_id"):
    assert np.allclose(one[ds][:n], two[ds][:n], rtol=1e-5, atol=1e-6), ds
    assert np.array_equal(one[ds][:n], sweep[ds][:n]), ds  # the same command on one rank
PY
  echo "entropy: the array job wrote both files; srun --mpi=pmix --tp 2 equals one rank (1e-5)"
  # eval_sweep.sbatch over the same checkpoints, 2 tasks each (dp 2); resubmitted, it keeps them
  for round in 1 2; do
    (cd "$work" && as_user sbatch --wait --parsable -J evals --array=0-1 --ntasks-per-node=2 -c 1 \
       --output="$work/%x-%A_%a.out" \
       --export=ALL,CKPTS="$work/ckpts.txt",EVAL_DIR="$work/eval",BUPO="$bupo",EVAL_ARGS="--sets builtin:arithmetic --n 2 --k 1 2 --max-prompts 4" \
       "$scripts/eval_sweep.sbatch" >"$work/evals$round.id" 2>&1) ||
      fail "the eval array job failed: $(cat "$work"/evals*.out "$work/evals$round.id" 2>/dev/null | tail -20)"
  done
  grep -q "already complete" "$work"/evals-*_0.out || fail "the resubmitted array did not keep the files"
  "$root/.venv/bin/python" - "$work/eval" <<'PY' || fail "the eval files are not what the array job should write"
import sys, h5py
for step in (1, 2):
    f = h5py.File(f"{sys.argv[1]}/step_{step:08d}.h5", "r")
    schema = f.attrs["schema"]
    schema = schema.decode() if isinstance(schema, bytes) else schema
    assert schema == "bupo-eval" and int(f.attrs["complete"]) == 1, (schema, f.attrs["complete"])
    assert int(f.attrs["step"]) == step and list(f["validation/arithmetic/step"][:]) == [step]
    assert f["validation/arithmetic/correct"].shape == (1, 4)
PY
  echo "eval: the array job (2 tasks each) scored both checkpoints; resubmitted, it kept them"
  ;;
scaling)
  # the sweep as the job user submits it: from copies (its ROOT is the copy's folder)
  mkdir -p "$work/kit/jobs/scaling" "$work/kit/jobs/slurm"
  cp "$root/jobs/scaling/sweep.py" "$work/kit/jobs/scaling/" && cp "$root"/jobs/slurm/*.sbatch "$work/kit/jobs/slurm/" ||
    fail "cannot copy the kit"
  chmod -R a+rX "$work/kit"
  config "$work/s.toml" "$work/unused" 2
  sweep=(python3 "$work/kit/jobs/scaling/sweep.py" --study "$work/study" --config "$work/s.toml"
         --mode slurm --pp 1,2 --micro 2 --steps 2 --bupo "$bupo" --time 00:10:00)
  (cd "$work" && as_user "${sweep[@]}") >"$work/sweep1.log" 2>&1 || fail "the sweep failed: $(cat "$work/sweep1.log")"
  grep -q "2 submitted" "$work/sweep1.log" || fail "expected 2 jobs submitted: $(cat "$work/sweep1.log")"
  for f in "$work"/study/*/slurm_job; do
    j=$(cat "$f")
    jobs_started+=("$j")
    wait_state "$j" 300 COMPLETED
  done
  (cd "$work" && as_user "${sweep[@]}") >"$work/sweep2.log" 2>&1 || fail "the re-run failed: $(cat "$work/sweep2.log")"
  grep -q "sweep: 2 done" "$work/sweep2.log" || fail "the re-run did not find both points done: $(cat "$work/sweep2.log")"
  "$root/.venv/bin/python" "$root/analysis/scaling.py" "$work/study" --no-figures >"$work/analysis.log" 2>&1 ||
    fail "analysis/scaling.py: $(cat "$work/analysis.log")"
  grep -q "tp1_pp2_dp1_m2_n1" "$work/analysis.log" || fail "the pp=2 point is missing: $(cat "$work/analysis.log")"
  cat "$work/analysis.log"
  ;;
*) fail "unknown case" ;;
esac
