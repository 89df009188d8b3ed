#!/usr/bin/env bash
# A Docker engine on each node of the two-node Slurm cluster (55-slurm-two-nodes.sh), as a
# site that runs Docker has one per node (as root; idempotent). Each dockerd runs in its
# node's network, mount and UTS namespaces, on the node's core, with a store of its own
# (/var/lib/docker-two/NODE): `docker run --network=host` there is the node's network and
# host name, and a node has only the images that were loaded or pulled on it. The node's
# slurmd (and so every job step on it) sees that daemon's socket at /run/docker.sock, where
# the docker CLI looks by default; the host's own dockerd (30-docker.sh) stays the host's.
# Skipped, saying why, without docker.io or without the two-node cluster.
set -euo pipefail

if [ ! -x /usr/sbin/dockerd ] || [ ! -x /usr/bin/docker ]; then
  echo "setup-host: dockerd is not installed (apt-get install docker.io); no Docker on the" \
    "two-node cluster" >&2
  exit 0
fi
nodes=(sb2n1 sb2n2)
declare -A core=([sb2n1]=0 [sb2n2]=$(( $(nproc) > 1 ? 1 : 0 )))
for n in "${nodes[@]}"; do
  if [ ! -e "/run/netns/$n" ] || [ ! -f "/etc/netns/$n/hosts" ]; then
    echo "setup-host: node $n of the two-node cluster is not set up: run" \
      "scripts/setup.d/55-slurm-two-nodes.sh first" >&2
    exit 1
  fi
done
if [ ! -S /run/docker.sock ]; then
  echo "setup-host: /run/docker.sock missing: start the host's dockerd first" \
    "(scripts/setup.d/30-docker.sh)" >&2
  exit 1
fi

# pid_alive PIDFILE NAME: the pid in PIDFILE, if that process runs and is called NAME.
pid_alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}

for n in "${nodes[@]}"; do
  root=/var/lib/docker-two/$n exec_root=/run/docker-two/$n sock=/run/docker-two/$n.sock
  pidfile=/run/docker-two/$n.pid log=/var/log/stackbuild-dockerd-$n.log
  if ! pid=$(pid_alive "$pidfile" dockerd); then
    rm -f "$pidfile" "$sock"
    mkdir -p "$root" "$exec_root"
    # Like the node's slurmd: its hosts file over /etc/hosts (what --network=host containers
    # copy), its host name, its core. No bridge, iptables or NAT: nothing of the host changes.
    # shellcheck disable=SC2016  # $1.. are the inner sh's arguments
    nsenter --net="/run/netns/$n" unshare --mount --propagation slave --uts \
      taskset -c "${core[$n]}" setsid sh -c \
      'mount --bind "/etc/netns/$1/hosts" /etc/hosts && hostname "$1" && shift && exec "$@"' \
      sh "$n" /usr/sbin/dockerd --data-root="$root" --exec-root="$exec_root" \
      --pidfile="$pidfile" --host="unix://$sock" --iptables=false --ip-forward=false \
      --ip-masq=false --bridge=none --insecure-registry=10.77.0.0/24 \
      >>"$log" 2>&1 < /dev/null &
    for _ in $(seq 60); do
      docker --host="unix://$sock" info >/dev/null 2>&1 && break
      sleep 1
    done
    if ! docker --host="unix://$sock" info >/dev/null 2>&1; then
      echo "setup-host: the Docker engine of node $n did not answer within 60 s; last lines" \
        "of $log:" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    echo "setup-host: started the Docker engine of node $n ($sock, store $root)"
  fi
  # The node's slurmd sees this daemon at /run/docker.sock (a bind mount in its mount
  # namespace, made again if the host's dockerd re-created its socket and so dropped it).
  slurmd=$(cat "/run/slurm-two/slurmd-$n.pid" 2>/dev/null || true)
  if [ -z "$slurmd" ] || [ ! -d "/proc/$slurmd" ]; then
    echo "setup-host: slurmd of node $n is not running: run" \
      "scripts/setup.d/55-slurm-two-nodes.sh first" >&2
    exit 1
  fi
  want=$(stat -L -c %i "$sock")
  if [ "$(nsenter --target="$slurmd" --mount stat -L -c %i /run/docker.sock 2>/dev/null)" != "$want" ]; then
    nsenter --target="$slurmd" --mount mount --bind "$sock" /run/docker.sock
    echo "setup-host: node $n's jobs use its own Docker engine at /run/docker.sock"
  fi
done
