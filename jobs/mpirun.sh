#!/usr/bin/env bash
# mpirun for bupo jobs outside Slurm: `jobs/mpirun.sh [mpirun options] -np N bupo train ...`.
# Why it exists: OpenMPI's mpirun, given SIGTERM or SIGINT, terminates its job itself and exits 1
# whatever its ranks do (it cannot forward SIGTERM: ess_base_forward_signals refuses it), so a
# `kill`, `timeout` or Ctrl-C of mpirun loses the orderly stop. This wrapper runs mpirun as a child
# and turns SIGTERM/SIGINT into SIGUSR2, which mpirun forwards to every rank; `bupo train` treats
# SIGUSR2 as SIGTERM (finish the step, checkpoint, exit 75; a rank blocked in a collective ends
# after parallel.stop_grace_s). SIGUSR1 passes through unchanged. The exit status is mpirun's:
# 75 when the ranks stopped in order, so `--resume` continues.
# MPIRUN names the launcher (default: mpirun on PATH).
set -uo pipefail
mpirun=${MPIRUN:-mpirun}
command -v "$mpirun" >/dev/null || { echo "jobs/mpirun.sh: '$mpirun' not found (set MPIRUN)" >&2; exit 1; }
# its own process group (job control), so that a Ctrl-C at the terminal reaches this script only
set -m
if [ -t 0 ]; then "$mpirun" "$@" </dev/null & else "$mpirun" "$@" & fi
child=$!
set +m
forward() {  # once per signal received; mpirun relays USR1/USR2 to the ranks
  kill -s "$1" "$child" 2>/dev/null || true
}
trap 'forward USR2' TERM INT
trap 'forward USR1' USR1
while :; do
  wait "$child"
  rc=$?
  # wait returns early (status > 128) when a trapped signal arrives while the child still runs
  kill -0 "$child" 2>/dev/null && continue
  if [ "$rc" -gt 128 ]; then  # cut by a trap just as the child ended: ask for its own status
    wait "$child" 2>/dev/null
    r=$?
    [ "$r" -ne 127 ] && rc=$r
  fi
  break
done
exit "$rc"
