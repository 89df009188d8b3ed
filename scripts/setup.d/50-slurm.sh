#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (as root; idempotent), so that the rendered job
# scripts can be submitted with sbatch in tests: munged, slurmctld and slurmd are started
# directly (there may be no systemd), from a generated slurm.conf with one node (all cores)
# in one default partition "debug". A second run only checks that the node answers.
set -euo pipefail

for tool in munged slurmctld slurmd sinfo scontrol; do
  if ! command -v "$tool" >/dev/null; then
    echo "setup-host: $tool missing: install munge slurmctld slurmd slurm-client" \
      "(scripts/apt-packages.txt)" >&2
    exit 1
  fi
done

node=$(hostname -s)
cpus=$(nproc)
# RealMemory must not exceed what slurmd finds, or the node is drained: 90% of the total,
# rounded down to whole GiB so the value (and the file) stays the same from run to run.
mem_total_mib=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
real_memory=$(( mem_total_mib * 9 / 10 / 1024 * 1024 ))
[ "$real_memory" -ge 1024 ] || real_memory=$(( mem_total_mib / 2 ))
# The node name must resolve; where it does not, point slurmctld and slurmd at loopback.
addr=""
getent hosts "$node" >/dev/null || addr=127.0.0.1

node_state() {
  sinfo --noheader --nodes="$node" --format=%T 2>/dev/null | head -n 1 | tr -cd 'a-z*'
}

# --- munge: a key, then munged as the munge user -------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  echo "setup-host: created /etc/munge/munge.key"
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
  runuser -u munge -- /usr/sbin/munged
  munge -n | unmunge >/dev/null
  echo "setup-host: started munged"
fi

# --- slurm.conf ------------------------------------------------------------------------
conf=/etc/slurm/slurm.conf
want=$(cat <<CONF
# Written by stackbuild scripts/setup.d/50-slurm.sh: a one-node test cluster.
ClusterName=stackbuild
SlurmctldHost=${node}${addr:+(${addr})}
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=slurm
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroup plugins: they need a cgroup layout that containers and VMs here may lack.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=${node}${addr:+ NodeAddr=${addr}} CPUs=${cpus} RealMemory=${real_memory} State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP
CONF
)
changed=0
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
  mkdir -p "$(dirname "$conf")"
  printf '%s\n' "$want" > "$conf"
  changed=1
  echo "setup-host: wrote $conf (node $node, $cpus CPUs, RealMemory $real_memory MiB)"
fi

# --- daemons: started directly (systemd may not be running; Debian's units, where it is,
# use the same slurm.conf and pid files) --------------------------------------------------
if [ "$changed" = 1 ] && pidof slurmctld slurmd >/dev/null; then
  # A new slurm.conf: stop the cluster the official way, then start it again below.
  scontrol shutdown >/dev/null 2>&1 || true
  for _ in $(seq 75); do pidof slurmctld slurmd >/dev/null || break; sleep 0.2; done
  if pidof slurmctld slurmd >/dev/null; then
    echo "setup-host: slurmctld/slurmd did not stop after 'scontrol shutdown'" >&2
    exit 1
  fi
fi
install -d -o slurm -g slurm -m 0755 /var/lib/slurm/slurmctld /var/log/slurm
install -d -m 0755 /var/lib/slurm/slurmd
if ! pidof slurmctld >/dev/null; then
  slurmctld
  echo "setup-host: started slurmctld"
fi
if ! pidof slurmd >/dev/null; then
  slurmd
  echo "setup-host: started slurmd"
fi

# --- wait until the node takes jobs ------------------------------------------------------
state=""
for _ in $(seq 60); do
  if scontrol ping >/dev/null 2>&1; then
    state=$(node_state)
    case "$state" in
      idle|mixed|allocated|completing) break ;;
      down|drained|draining|drain|fail|failing)
        scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
    esac
  fi
  sleep 0.5
done
case "$state" in
  idle|mixed|allocated|completing) ;;
  *)
    echo "setup-host: Slurm node $node is '${state:-not answering}'; see" \
      "/var/log/slurm/slurmctld.log and /var/log/slurm/slurmd.log" >&2
    exit 1
    ;;
esac
echo "setup-host: Slurm ready (node $node $state, partition debug)"
