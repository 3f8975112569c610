#!/bin/sh
# A one-node Slurm cluster on this machine (Debian's slurm-wlm, as root), a 4-run sweep
# through it with `oneclass sweep --executor slurm`, and the sweep's table.
#
#     sh benchmarks/slurm_local.sh [OUT]        (OUT default /tmp/oneclass-slurm-sweep)
#
# Installs slurm-wlm and munge where missing, writes /etc/slurm/slurm.conf for this host
# (its cores, no cgroups, no accounting), starts munged, slurmctld and slurmd, waits for
# the node, runs the sweep, and leaves the daemons running (`pkill slurmd slurmctld
# munged` stops them). Run from the repository root with the toolkit installed.
set -eu
OUT=${1:-/tmp/oneclass-slurm-sweep}
PYTHON=${PYTHON:-python}

if ! command -v slurmctld >/dev/null 2>&1; then
    apt-get install -y -q slurm-wlm
fi
HOST=$(hostname -s)
CPUS=$(nproc)
MEMORY=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=oneclass-local
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$HOST CPUs=$CPUS RealMemory=$MEMORY State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

[ -s /etc/munge/munge.key ] || mungekey --create --force
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
pgrep -x munged >/dev/null || runuser -u munge -- munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 30); do
    state=$(sinfo --noheader --format=%T 2>/dev/null || true)
    [ "$state" = "idle" ] && break
    sleep 1
done
sinfo

rm -rf "$OUT"
time "$PYTHON" -m oneclass sweep recipes/demo.yaml -g split.gamma=0,0.2 -g method.name=deep-sad,ss-dcae \
    --out "$OUT" --executor slurm --slurm time=30 --slurm cpus_per_task=1 \
    --set train.epochs=1 --set method.deep-sad.pretrain_epochs=1
