#!/usr/bin/env bash
# A single-machine Slurm from Debian's packages, for the `slurm` tests and for trying the batch
# scripts: munge + slurmctld + slurmd on this host, one node with 4 CPUs (more than the cores:
# SlurmdParameters=config_overrides), no cgroups or systemd (proctrack/linuxproc, task/none), and
# an ordinary user that jobs run as. Idempotent; needs root.
#   env/slurm-localhost.sh install | configure | start | status | stop | up (= all three first)
# Facts it relies on (Debian 12, Slurm 22.05): the pmix plugin loads libpmix.so from libpmix-dev,
# which the Slurm packages do not depend on; Debian's OpenMPI 4.1 starts under srun --mpi=pmix.
# Environment: BUPO_SLURM_USER (default bupo-ci), BUPO_SLURM_CPUS (default 4).
set -euo pipefail
say() { printf 'env/slurm-localhost.sh: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
user=${BUPO_SLURM_USER:-bupo-ci}
cpus=${BUPO_SLURM_CPUS:-4}
host=$(hostname -s)
conf=/etc/slurm/slurm.conf
pkgs=(munge slurmctld slurmd slurm-client libpmix-dev)

need_root() { [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)"; }

install() {
  need_root
  local missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/bupo-slurm-apt.log 2>&1 ||
      { tail -20 /tmp/bupo-slurm-apt.log >&2; die "apt-get install failed (log: /tmp/bupo-slurm-apt.log)"; }
  fi
  id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user" ||
    die "cannot create the job user $user"
}

configure() {
  need_root
  [ -s /etc/munge/munge.key ] || { mungekey --create --force >/dev/null 2>&1 ||
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; }
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chown slurm:slurm /var/spool/slurmctld /var/log/slurm
  local mem
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
  local new
  new=$(cat <<CONF
# written by bupo's env/slurm-localhost.sh: one node, this host
ClusterName=bupo-localhost
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
InactiveLimit=0
MinJobAge=600
KillWait=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
)
  if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$new" ]; then
    printf '%s\n' "$new" >"$conf"
    say "wrote $conf"
  fi
}

running() { pgrep -x "$1" >/dev/null; }

start() {
  need_root
  [ -f "$conf" ] || die "$conf is missing: run '$0 configure' first"
  running munged || runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
  for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munge does not work (see /var/log/munge/munged.log)"
  running slurmctld || /usr/sbin/slurmctld || die "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
  running slurmd || /usr/sbin/slurmd || die "slurmd did not start (see /var/log/slurm/slurmd.log)"
  for _ in $(seq 100); do
    state=$(sinfo -h -n "$host" -o %t 2>/dev/null || true)
    case "$state" in idle*|mix*|alloc*) break ;; down*|drain*) scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true ;; esac
    sleep 0.2
  done
  status
}

status() {
  local ok=1
  for d in munged slurmctld slurmd; do running "$d" || { say "$d is not running"; ok=0; }; done
  [ $ok = 1 ] || return 1
  local state
  state=$(sinfo -h -n "$host" -o %t 2>/dev/null || true)
  case "$state" in
    idle*|mix*|alloc*) say "up: node $host $state, $(sinfo -h -n "$host" -o %c) CPUs; jobs run as $user"; return 0 ;;
    *) say "node $host is '${state:-unknown}' (see /var/log/slurm/slurmd.log)"; return 1 ;;
  esac
}

stop() {
  need_root
  for d in slurmd slurmctld munged; do pkill -x "$d" 2>/dev/null || true; done
  for _ in $(seq 50); do running slurmd || running slurmctld || running munged || break; sleep 0.1; done
  say "stopped"
}

case "${1:-}" in
  install) install ;;
  configure) configure ;;
  start) start ;;
  status) status ;;
  stop) stop ;;
  up) install; configure; start ;;
  *) die "usage: $0 install|configure|start|status|stop|up" ;;
esac
