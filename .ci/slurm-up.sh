#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on this machine (Debian's slurmctld, slurmd, munge), for the SLURM tests.
#   bash .ci/slurm-up.sh [STATE_DIR]      # prints the SLURM_CONF path on its last line
#   bash .ci/slurm-down.sh [STATE_DIR]    # stops the daemons
# Installs the packages when they are missing (root, apt). Everything it writes lives under STATE_DIR.
set -euo pipefail
STATE=${1:-/tmp/symscale-slurm}
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
mkdir -p "$STATE"/{spool,state,log,munge}
NODE=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat > "$STATE/slurm.conf" <<CONF
ClusterName=symscale-ci
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmdSpoolDir=$STATE/spool
StateSaveLocation=$STATE/state
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
JobRequeue=1
KillWait=5
MinJobAge=30
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
# munge: a key of our own, its own socket and pid file, so a system munge is left alone
if [ ! -s "$STATE/munge/munge.key" ]; then
  dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1 count=1024 status=none
  chmod 400 "$STATE/munge/munge.key"
fi
mkdir -p /run/munge
if ! pgrep -x munged >/dev/null; then
  munged --force --key-file="$STATE/munge/munge.key" --pid-file="$STATE/munge/munged.pid" \
         --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munge.seed"
fi
export SLURM_CONF="$STATE/slurm.conf"
pgrep -x slurmctld >/dev/null || slurmctld -f "$SLURM_CONF"
pgrep -x slurmd >/dev/null || slurmd -f "$SLURM_CONF"
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; then break; fi
  sleep 1
done
scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
sinfo -h -o '%P %T %D' >&2
echo "$SLURM_CONF"
