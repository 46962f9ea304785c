#!/usr/bin/env bash
# Fault handling under mpirun (ctest: mpi.fault_*): a rank that hangs or dies must end the whole
# job within a bounded time, with a message naming a rank and its host — never a silent hang.
#   check_fault.sh MPIRUN BUPO KIND    (KIND: hang | die | term)
# term: rank 1 hangs and every rank then gets SIGTERM (what Slurm sends the tasks of a job whose
# node died, or at scancel); the rank blocked in a collective must end within parallel.stop_grace_s
# (3 s here), long before the 120 s timeout, naming itself and the operation.
set -uo pipefail
mpirun=$1 bupo=$2 kind=$3
shift 3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cfg="$dir/tiny.toml"
source "$(dirname "${BASH_SOURCE[0]}")/tiny_run.sh"
tiny_run_config "$cfg" "$dir/run" 4 "timeout_s = $([ "$kind" = term ] && echo 120 || echo 5)
stop_grace_s = 3
fault_inject = \"$([ "$kind" = term ] && echo hang || echo "$kind"):1@2\""
start=$(date +%s)
if [ "$kind" = term ]; then
  timeout 170 "$mpirun" "$@" -np 2 "$bupo" train -c "$cfg" --overwrite >"$dir/out" 2>&1 &
  job=$!
  for _ in $(seq 1 600); do  # until rank 1 hangs in step 2 (step 1 is logged)
    grep -q "fault injection" "$dir/out" 2>/dev/null && [ -s "$dir/run/metrics.jsonl" ] && break
    sleep 0.1
  done
  sleep 1
  start=$(date +%s)
  for p in $(pgrep -f -- "train -c $cfg"); do  # the ranks, not mpirun
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = bupo ] && kill -TERM "$p"
  done
  wait "$job"
  rc=$?
else
  timeout 120 "$mpirun" "$@" -np 2 "$bupo" train -c "$cfg" --overwrite >"$dir/out" 2>&1
  rc=$?
fi
elapsed=$(( $(date +%s) - start ))
cat "$dir/out"
echo "check_fault: $kind: exit $rc after ${elapsed}s"
[ "$rc" -ne 0 ] || { echo "FAIL: the job exited 0"; exit 1; }
[ "$rc" -ne 124 ] || { echo "FAIL: the job hung until the test's own timeout"; exit 1; }
grep -q "fault injection: rank 1 (host" "$dir/out" || { echo "FAIL: the injected fault was not announced"; exit 1; }
if [ "$kind" = term ]; then
  grep -Eq "bupo: rank 0 \(host [^)]+\): signal 15 received, and [a-z_]+ of [0-9]+ B on group '[a-z.]+' \(world ranks 0,1\)( from rank 1 \(host [^)]+\))? has been blocked for [0-9.]+ s since \(parallel.stop_grace_s\)" "$dir/out" ||
    { echo "FAIL: no message naming the blocked rank, its host and the operation"; exit 1; }
  [ "$elapsed" -le 30 ] || { echo "FAIL: took ${elapsed}s after SIGTERM for a 3 s grace"; exit 1; }
elif [ "$kind" = hang ]; then
  # the watchdog of the waiting rank names itself, its host, the operation and the peer
  # (a receive also names the peer: "... from rank 1 (host H)")
  grep -Eq "bupo: rank 0 \(host [^)]+\): [a-z_]+ of [0-9]+ B on group '[a-z.]+' \(world ranks 0,1\)( from rank 1 \(host [^)]+\))? did not complete within 5 s" "$dir/out" ||
    { echo "FAIL: no watchdog message naming the rank and host"; exit 1; }
  [ "$elapsed" -le 60 ] || { echo "FAIL: took ${elapsed}s for a 5 s timeout"; exit 1; }
else
  # mpirun names the process that died
  grep -Eiq "rank 1|exited on signal|non-zero status" "$dir/out" ||
    { echo "FAIL: the launcher did not name the dead rank"; exit 1; }
fi
[ -s "$dir/run/metrics.jsonl" ] || { echo "FAIL: step 1's metrics were lost"; exit 1; }
echo "check_fault: $kind: OK"
