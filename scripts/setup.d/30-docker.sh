#!/usr/bin/env bash
# Start Debian's Docker engine (docker.io 20.10, as root; idempotent; no systemd here):
# dockerd in the background with its log in /var/log/stackbuild-dockerd.log, then wait until
# `docker info` answers. No bridge and no iptables rules (neither works on these machines):
# builds and containers use host networking (`stackbuild build --engine docker` passes
# --network=host, the runtime table's docker row runs with --network=host).
set -euo pipefail
log=/var/log/stackbuild-dockerd.log
# Debian's client, the daemon's own version: a newer client elsewhere on PATH may lack BuildKit.
docker=/usr/bin/docker

if [ ! -x /usr/sbin/dockerd ] || [ ! -x "$docker" ]; then
  echo "setup-host: dockerd is not installed (apt-get install docker.io); skipping Docker" >&2
  exit 0
fi
if "$docker" info --format '{{.ServerVersion}}' >/dev/null 2>&1; then
  exit 0  # already running
fi

# A daemon that died leaves its pid file; dockerd refuses to start while it names a process.
pidfile=/var/run/docker.pid
if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  rm -f "$pidfile"
fi
echo "setup-host: starting dockerd (log: $log)"
# setsid: the daemon outlives this script and the shell that ran it.
setsid /usr/sbin/dockerd --iptables=false --bridge=none >>"$log" 2>&1 < /dev/null &

for _ in $(seq 1 60); do
  if "$docker" info --format '{{.ServerVersion}}' >/dev/null 2>&1; then
    echo "setup-host: dockerd $("$docker" info --format '{{.ServerVersion}}') is running" \
      "($("$docker" info --format '{{.Driver}}') storage in /var/lib/docker)"
    exit 0
  fi
  sleep 1
done
echo "setup-host: dockerd did not answer within 60 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1
