#!/usr/bin/env bash
# SIGTERM or SIGINT sent to the launcher (jobs/mpirun.sh, what a user's `kill`, `timeout` or
# Ctrl-C reaches) must end like SIGUSR1: every rank finishes the step, one checkpoint, exit 75;
# then --resume completes the run (ctest: mpi.launcher_signal_*).
#   check_launcher_signals.sh MPIRUN BUPO SIGNAL [mpirun flags...]    (SIGNAL: TERM | INT)
set -uo pipefail
mpirun=$1 bupo=$2 sig=$3
shift 3
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cfg="$dir/tiny.toml"
source "$(dirname "${BASH_SOURCE[0]}")/tiny_run.sh"
tiny_run_config "$cfg" "$dir/run" 2000 "timeout_s = 60"
export MPIRUN=$mpirun
# job control: without it bash starts background commands with SIGINT ignored (as no terminal
# would), and an ignored signal cannot be trapped by the launcher
set -m
bash "$root/jobs/mpirun.sh" "$@" -np 2 "$bupo" train -c "$cfg" --overwrite >"$dir/out" 2>&1 &
job=$!
set +m
for _ in $(seq 1 600); do  # until step 1 is logged
  [ -s "$dir/run/metrics.jsonl" ] && break
  sleep 0.1
done
kill -s "$sig" "$job"
wait "$job"
rc=$?
grep -v '^step' "$dir/out"
echo "check_launcher_signals: SIG$sig to jobs/mpirun.sh: exit $rc"
[ "$rc" -eq 75 ] || { echo "FAIL: expected exit 75 (orderly stop), got $rc"; exit 1; }
grep -q "preempted by signal 12: stopped after step" "$dir/out" ||
  { echo "FAIL: the ranks did not stop in order after the relayed signal"; exit 1; }
step=$(cat "$dir/run/checkpoints/latest" 2>/dev/null) || { echo "FAIL: no checkpoint"; exit 1; }
bash "$root/jobs/mpirun.sh" "$@" -np 2 "$bupo" train -c "$cfg" --resume --set trainer.steps=$((10#${step#step_} + 3)) \
  >"$dir/out2" 2>&1
rc=$?
[ "$rc" -eq 0 ] || { cat "$dir/out2"; echo "FAIL: --resume exited $rc"; exit 1; }
echo "check_launcher_signals: SIG$sig: stopped at $step with exit 75, resumed 3 more steps: OK"
