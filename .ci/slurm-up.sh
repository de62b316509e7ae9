#!/usr/bin/env bash
# Install and start a one-node SLURM cluster (Debian slurm-wlm + munge) on this machine, idempotently.
# Needs root. Each daemon starts only when its pid file does not name a live process; a running cluster is
# left as it is. The tests marked `slurm` (tests/test_slurm.py) run against it and skip when `sinfo` fails.
#   .ci/slurm-up.sh            # install if missing, configure, start, wait until the node is idle
#   SLURM_DIR=/tmp/x .ci/slurm-up.sh
set -euo pipefail
d=${SLURM_DIR:-/tmp/slurm-local}
if [ "$(id -u)" -ne 0 ]; then echo "slurm-up: needs root (it installs packages and starts daemons)" >&2; exit 1; fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
h=$(hostname -s)
mkdir -p "$d/state" "$d/spool" "$d/log" /etc/slurm
conf=$(cat <<CONF
ClusterName=local
SlurmctldHost=$h
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
NodeName=$h CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$h Default=YES MaxTime=INFINITE State=UP
CONF
)
if [ ! -f /etc/slurm/slurm.conf ] || [ "$(cat /etc/slurm/slurm.conf)" != "$conf" ]; then
  printf '%s\n' "$conf" > /etc/slurm/slurm.conf
fi
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 400 /etc/munge/munge.key
alive /run/munge/munged.pid || su -s /bin/sh munge -c /usr/sbin/munged
alive "$d/slurmctld.pid" || { /usr/sbin/slurmctld -i; sleep 2; }
alive "$d/slurmd.pid" || /usr/sbin/slurmd
for _ in $(seq 30); do
  if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then sinfo; exit 0; fi
  sleep 1
done
echo "slurm-up: the node did not become idle in 30 s; see $d/log/" >&2
sinfo >&2 || true
exit 1
