#!/usr/bin/env bash
# Configure podman/buildah for this host (as root; idempotent): runc as the OCI runtime,
# container ulimits at or below the host's hard limits (runc refuses to raise them), a
# storage driver that works here, and the Debian base image the engine tests build on.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# --- containers.conf drop-in: runtime and ulimits -------------------------------------
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu)
pid_max=$(cat /proc/sys/kernel/pid_max)
# conmon runs with nproc capped at pid_max, so asking for more fails in runc.
if [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; then nproc=$pid_max; fi
conf=/etc/containers/containers.conf.d/50-stackbuild.conf
want=$(cat <<CONF
# Written by stackbuild scripts/setup.d/20-containers.sh; rerun it after changing limits.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"
CONF
)
mkdir -p "$(dirname "$conf")"
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
  printf '%s\n' "$want" > "$conf"
  echo "setup-host: wrote $conf (nofile=$nofile nproc=$nproc, runtime runc)"
fi

# --- storage.conf: overlay where the kernel has it, else fuse-overlayfs, else vfs ------
storage=/etc/containers/storage.conf
if [ ! -f "$storage" ]; then
  modprobe overlay 2>/dev/null || true
  if grep -qw overlay /proc/filesystems; then
    driver=overlay; options=""
  elif [ -e /dev/fuse ] && command -v fuse-overlayfs >/dev/null; then
    driver=overlay; options='mount_program = "/usr/bin/fuse-overlayfs"'
  else
    driver=vfs; options=""
  fi
  cat > "$storage" <<CONF
# Written by stackbuild scripts/setup.d/20-containers.sh.
[storage]
driver = "$driver"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"

[storage.options.overlay]
$options
CONF
  echo "setup-host: wrote $storage (driver $driver)"
fi

# --- a store that podman-hpc once opened with its mount program stays on fuse-overlayfs ---
# c/storage records a mount program in <graphroot>/overlay/.has-mount-program, and finds
# one again in the layers it made, and mounts with fuse-overlayfs from then on whatever
# storage.conf says: builds ran 3-4 times slower here once podman-hpc shared podman's store
# (it has its own now, 35-podman-hpc.sh). Only a new store undoes it: say so.
in_use=${CONTAINERS_STORAGE_CONF:-$storage}
graph=$(podman info --format '{{.Store.GraphRoot}}' 2>/dev/null || true)
if [ -n "$graph" ] && [ "$(cat "$graph/overlay/.has-mount-program" 2>/dev/null)" = true ] &&
   ! grep -Eq '^[[:space:]]*mount_program[[:space:]]*=[[:space:]]*"[^"]+"' "$in_use"; then
  echo "setup-host: note: podman's store $graph mounts with fuse-overlayfs (a mount program" \
    "used it once), not the kernel's overlay, and builds about 4 times slower; only a new" \
    "store undoes that (podman system reset, which removes every image)" >&2
fi

# --- check, then make sure the base image exists (reused, or imported from the cache) ---
podman info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}' >/dev/null
if [ -x "$here/.venv/bin/python" ]; then
  (cd "$here" && .venv/bin/python -c \
    'from stackbuild.build.base import ensure_base_image; ensure_base_image(say=lambda m: print("setup-host:", m))')
fi
