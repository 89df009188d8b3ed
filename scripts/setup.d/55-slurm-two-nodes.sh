#!/usr/bin/env bash
# A second, two-node Slurm cluster on this machine (as root; idempotent), beside the one-node
# cluster of 50-slurm.sh, so that job scripts with `nodes: 2` run across "nodes" that talk
# over a network: each slurmd runs in a network namespace of its own (a veth into the bridge
# sb2br0, 10.77.0.0/24) and a UTS namespace with the node's host name; the controller runs
# on the host at the bridge's address. Submit with SLURM_CONF=/etc/slurm-two/slurm.conf.
# Nothing here touches the one-node cluster: own slurm.conf, ports, spool, state, logs and
# pid files, and its daemons run under other names (pidof slurmctld/slurmd in 50-slurm.sh
# must not see them). munged is shared. A second run only checks.
set -euo pipefail

for tool in ip unshare nsenter taskset slurmctld slurmd sinfo scontrol; do
  if ! command -v "$tool" >/dev/null; then
    echo "setup-host: $tool missing: install iproute2 util-linux slurmctld slurmd" \
      "slurm-client (scripts/apt-packages.txt)" >&2
    exit 1
  fi
done
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  echo "setup-host: munged not running: run scripts/setup.d/50-slurm.sh first" >&2
  exit 1
fi

etc=/etc/slurm-two
conf=$etc/slurm.conf
export SLURM_CONF=$conf
bridge=sb2br0
host_addr=10.77.0.1
nodes=(sb2n1 sb2n2)
declare -A addr=([sb2n1]=10.77.0.11 [sb2n2]=10.77.0.12)
# Each node runs on a core of its own (its slurmd and so its tasks are bound to it), as real
# nodes do: unbound, ranks on both "nodes" with local rank 0 would pin themselves to core 0.
declare -A core=([sb2n1]=0 [sb2n2]=$(( $(nproc) > 1 ? 1 : 0 )))
ctld_port=6827
slurmd_port=6828
libexec=/usr/local/libexec/stackbuild
ctld_bin=$libexec/slurmctld-two
slurmd_bin=$libexec/slurmd-two
host=$(hostname -s)
# Half the memory per node (both share it), whole GiB, so the file stays the same.
mem_total_mib=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
real_memory=$(( mem_total_mib * 9 / 10 / 2 / 1024 * 1024 ))
[ "$real_memory" -ge 1024 ] || real_memory=$(( mem_total_mib / 4 ))

# --- daemons under their own names: a symlink's name is the process name pidof sees -----
mkdir -p "$libexec"
ln -sfn "$(command -v slurmctld)" "$ctld_bin"
ln -sfn "$(command -v slurmd)" "$slurmd_bin"

# pid_alive PIDFILE NAME: the pid in PIDFILE, if that process runs and is called NAME.
pid_alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}
slurmd_pid() { pid_alive "/run/slurm-two/slurmd-$1.pid" slurmd-two; }
ctld_pid() { pid_alive /run/slurm-two/slurmctld.pid slurmctld-two; }

# --- network: bridge on the host, one namespace per node ---------------------------------
if ! ip link show "$bridge" >/dev/null 2>&1; then
  ip link add "$bridge" type bridge
fi
ip addr show dev "$bridge" | grep -q "inet $host_addr/24" || ip addr add "$host_addr/24" dev "$bridge"
ip link set "$bridge" up

hosts_file() {
  printf '%s\n' "# Written by stackbuild scripts/setup.d/55-slurm-two-nodes.sh" \
    "127.0.0.1 localhost" "::1 localhost ip6-localhost ip6-loopback" \
    "$host_addr $host sb2ctl"
  local n
  for n in "${nodes[@]}"; do echo "${addr[$n]} $n"; done
}

for n in "${nodes[@]}"; do
  pid=$(slurmd_pid "$n" || true)
  # A slurmd outside its namespace (the name was deleted and made again): restart it there.
  if [ -n "$pid" ] && [ "$(ip netns identify "$pid" 2>/dev/null)" != "$n" ]; then
    kill "$pid"
    for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
  fi
  # A name left over without its namespace (/run/netns survived, the namespace did not).
  if ip netns list 2>/dev/null | grep -qw "^$n" && ! ip netns exec "$n" true 2>/dev/null; then
    ip netns delete "$n"
  fi
  if ! ip netns list 2>/dev/null | grep -qw "^$n"; then
    ip link delete "${n}h" 2>/dev/null || true
    ip netns add "$n"
  fi
  if ! ip netns exec "$n" ip link show eth0 >/dev/null 2>&1; then
    ip link delete "${n}h" 2>/dev/null || true
    ip link add "${n}h" type veth peer name "${n}c"
    ip link set "${n}c" netns "$n"
    ip netns exec "$n" ip link set "${n}c" name eth0
  fi
  ip link set "${n}h" master "$bridge"
  ip link set "${n}h" up
  ip netns exec "$n" sh -c "
    ip addr show dev eth0 | grep -q 'inet ${addr[$n]}/24' || ip addr add ${addr[$n]}/24 dev eth0
    ip link set eth0 up
    ip link set lo up"
  # The node's /etc/hosts (slurmd's mount namespace below; `ip netns exec` uses it too).
  mkdir -p "/etc/netns/$n"
  want=$(hosts_file)
  if [ "$(cat "/etc/netns/$n/hosts" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" > "/etc/netns/$n/hosts"
  fi
done

# --- slurm.conf --------------------------------------------------------------------------
node_lines=""
for n in "${nodes[@]}"; do
  node_lines+="NodeName=$n NodeAddr=${addr[$n]} NodeHostname=$n CPUs=$(nproc) RealMemory=$real_memory State=UNKNOWN"$'\n'
done
want=$(cat <<CONF
# Written by stackbuild scripts/setup.d/55-slurm-two-nodes.sh: a two-node test cluster,
# each slurmd in its own network namespace; use it with SLURM_CONF=$conf.
ClusterName=stackbuild-two
SlurmctldHost=${host}(${host_addr})
SlurmctldPort=${ctld_port}
SlurmdPort=${slurmd_port}
AuthType=auth/munge
CryptoType=crypto/munge
SlurmUser=slurm
SlurmctldPidFile=/run/slurm-two/slurmctld.pid
SlurmdPidFile=/run/slurm-two/slurmd-%n.pid
StateSaveLocation=/var/lib/slurm-two/slurmctld
SlurmdSpoolDir=/var/lib/slurm-two/slurmd-%n
SlurmctldLogFile=/var/log/slurm-two/slurmctld.log
SlurmdLogFile=/var/log/slurm-two/slurmd-%n.log
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
${node_lines}PartitionName=two Nodes=$(IFS=,; echo "${nodes[*]}") Default=YES MaxTime=INFINITE State=UP
CONF
)
changed=0
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
  mkdir -p "$etc"
  printf '%s\n' "$want" > "$conf"
  changed=1
  echo "setup-host: wrote $conf (nodes ${nodes[*]}, $(nproc) CPUs each, RealMemory $real_memory MiB)"
fi

running() {
  ctld_pid >/dev/null && return 0
  local n
  for n in "${nodes[@]}"; do slurmd_pid "$n" >/dev/null && return 0; done
  return 1
}
if [ "$changed" = 1 ] && running; then
  # A new slurm.conf: stop this cluster the official way, then start it again below.
  scontrol shutdown >/dev/null 2>&1 || true
  for _ in $(seq 75); do running || break; sleep 0.2; done
  if running; then
    echo "setup-host: the two-node cluster did not stop after 'scontrol shutdown'" >&2
    exit 1
  fi
fi

# --- daemons -----------------------------------------------------------------------------
install -d -m 0755 /run/slurm-two
install -d -o slurm -g slurm -m 0755 /var/lib/slurm-two/slurmctld /var/log/slurm-two
if ! ctld_pid >/dev/null; then
  "$ctld_bin" -f "$conf"
  echo "setup-host: started slurmctld-two ($host_addr:$ctld_port)"
fi
for n in "${nodes[@]}"; do
  install -d -m 0755 "/var/lib/slurm-two/slurmd-$n"
  if ! slurmd_pid "$n" >/dev/null; then
    # Not `ip netns exec`: it mounts a new /sys without the cgroup file systems that
    # slurmd and podman need. A mount namespace of the node's own puts its hosts file over
    # /etc/hosts, and a UTS namespace gives it its host name (MPI and gloo resolve that to
    # the node's address); -N names the Slurm node.
    # shellcheck disable=SC2016  # $1..$3 are the inner sh's arguments
    nsenter --net="/run/netns/$n" unshare --mount --propagation slave --uts \
      taskset -c "${core[$n]}" sh -c \
      'mount --bind "/etc/netns/$1/hosts" /etc/hosts && hostname "$1" && exec "$2" -f "$3" -N "$1"' \
      sh "$n" "$slurmd_bin" "$conf"
    echo "setup-host: started slurmd-two $n (${addr[$n]}, netns $n, core ${core[$n]})"
  fi
done

# --- wait until both nodes take jobs -----------------------------------------------------
states=""
for _ in $(seq 90); do
  if scontrol ping >/dev/null 2>&1; then
    states=""
    all_up=1
    for n in "${nodes[@]}"; do
      state=$(sinfo --noheader --nodes="$n" --format=%T 2>/dev/null | head -n 1 | tr -cd 'a-z*')
      states+="$n=${state:-?} "
      case "$state" in
        idle|mixed|allocated|completing) ;;
        down|drained|draining|drain|fail|failing)
          all_up=0
          scontrol update NodeName="$n" State=RESUME >/dev/null 2>&1 || true ;;
        *) all_up=0 ;;
      esac
    done
    [ "$all_up" = 1 ] && break
  fi
  sleep 0.5
done
if [ "${all_up:-0}" != 1 ]; then
  echo "setup-host: two-node Slurm not ready (${states:-controller not answering}); see" \
    "/var/log/slurm-two/" >&2
  exit 1
fi
echo "setup-host: two-node Slurm ready (${states% }; SLURM_CONF=$conf, partition two)"
