#!/usr/bin/env bash
# NERSC's podman-hpc for this machine (as root; idempotent): podman-hpc 1.2.2 from PyPI in
# its own venv, a static mksquashfs for `podman-hpc migrate`, the site configuration
# (scripts/podman-hpc/: the machine's podman store, an `mpich` module that
# swaps the image's MPICH for the host's by ABI) and `podman-hpc` on PATH. A second run
# only checks. Runs after 20-containers.sh (podman with runc).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${STACKBUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stackbuild}/podman-hpc
version=1.2.2
prefix=/opt/podman-hpc           # the venv; mksquashfs.static in libexec/
etc=/etc/podman_hpc              # podman-hpc's default site config path
site_mpich=/opt/site-mpich       # the "site MPI": a copy of the host's MPICH
bin=/usr/local/bin/podman-hpc
slurmd_spool=/var/lib/slurm/slurmd   # SlurmdSpoolDir of 50-slurm.sh
multiarch=/usr/lib/x86_64-linux-gnu

say() { echo "setup-host: $*"; }

# install_if_changed SRC DST [MODE]: copy only when the content differs (a rerun is quiet).
install_if_changed() {
  if ! cmp -s "$1" "$2"; then
    install -D -m "${3:-0644}" "$1" "$2"
    say "wrote $2"
  fi
}

# --- Debian packages: squashfuse and inotifywait for fuse-overlayfs-wrap; static zlib,
# liblzma and liblz4 for the static mksquashfs; the host MPICH that becomes the site MPI.
need=(fuse-overlayfs squashfuse inotify-tools zlib1g-dev liblzma-dev liblz4-dev
      build-essential libmpich12 python3-venv)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages for podman-hpc: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- podman-hpc in its own venv, with the host's pip configuration (CA bundle, mirrors) ---
if ! "$prefix/bin/python" -c \
    "import importlib.metadata as m, sys; sys.exit(m.version('podman-hpc') != '$version')" 2>/dev/null; then
  say "installing podman-hpc==$version into $prefix"
  python3 -m venv "$prefix"
  "$prefix/bin/python" -m pip install -q "podman-hpc==$version" 2>&1 | grep -v 'is ignored' || true
  "$prefix/bin/python" -c "import podman_hpc.podman_hpc" >/dev/null 2>&1 || {
    echo "setup-host: podman-hpc $version did not install into $prefix" >&2; exit 1; }
fi

# --- a static mksquashfs >= 4.6: migrate runs it inside the image (whose libraries may
# lack lz4) with -xattrs-exclude, which bookworm's 4.5.1 lacks; built from Debian trixie's
# squashfs-tools source (apt-get source from the Debian mirror, own lists under the cache).
mksq=$prefix/libexec/mksquashfs.static
if ! { [ -x "$mksq" ] && "$mksq" -help 2>&1 | grep -q -- -xattrs-exclude; }; then
  say "building a static mksquashfs (squashfs-tools from Debian trixie) for podman-hpc migrate"
  mkdir -p "$cache/apt/lists/partial" "$cache/src"
  echo "deb-src http://deb.debian.org/debian trixie main" > "$cache/apt/sources.list"
  apt_src=(-o APT::Sandbox::User=root -o "Dir::Etc::SourceList=$cache/apt/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
           -o "Dir::State::Lists=$cache/apt/lists")
  (cd "$cache/src" &&
    apt-get -qq "${apt_src[@]}" update &&
    apt-get -qq "${apt_src[@]}" source --download-only squashfs-tools)
  orig=""
  for f in "$cache"/src/squashfs-tools_4.6*.orig.tar.gz; do [ -e "$f" ] && orig=$f; done
  [ -n "$orig" ] || { echo "setup-host: could not fetch squashfs-tools 4.6 source" >&2; exit 1; }
  build=$(mktemp -d)
  tar -xzf "$orig" -C "$build"
  make -s -C "$build"/squashfs-tools-*/squashfs-tools -j"$(nproc)" mksquashfs \
    GZIP_SUPPORT=1 XZ_SUPPORT=1 LZ4_SUPPORT=1 LZO_SUPPORT=0 ZSTD_SUPPORT=0 \
    EXTRA_LDFLAGS=-static >"$build/make.log" 2>&1 || {
      tail -n 20 "$build/make.log" >&2; echo "setup-host: mksquashfs build failed" >&2; exit 1; }
  install -D -m 0755 "$build"/squashfs-tools-*/squashfs-tools/mksquashfs "$mksq"
  rm -rf "$build"
  say "installed $mksq ($("$mksq" -version | head -n 1))"
fi

# --- the site MPICH: real copies (not links into /usr/lib, which inside an image would
# resolve to the image's own files), under both ABI names, and its non-glibc dependencies.
mpich_real=$(readlink -f "$multiarch/libmpich.so.12")
install_if_changed "$mpich_real" "$site_mpich/lib/$(basename "$mpich_real")"
for soname in libmpich.so.12 libmpi.so.12; do
  if [ "$(readlink "$site_mpich/lib/$soname" 2>/dev/null)" != "$(basename "$mpich_real")" ]; then
    ln -sfn "$(basename "$mpich_real")" "$site_mpich/lib/$soname"
  fi
done
while read -r dep; do
  case "$(basename "$dep")" in libc.so*|libm.so*|ld-linux*|libpthread*|libdl.so*|librt.so*) continue ;; esac
  real=$(readlink -f "$dep")
  install_if_changed "$real" "$site_mpich/lib/dep/$(basename "$real")"
  [ "$real" = "$dep" ] || [ -L "$site_mpich/lib/dep/$(basename "$dep")" ] ||
    ln -sfn "$(basename "$real")" "$site_mpich/lib/dep/$(basename "$dep")"
done < <(ldd "$mpich_real" | awk '$3 ~ /^\// {print $3}')
# UCX loads its transports from <dir of libucs>/ucx.
for mod in "$multiarch"/ucx/*.so.0; do
  [ -e "$mod" ] || continue
  real=$(readlink -f "$mod")
  install_if_changed "$real" "$site_mpich/lib/dep/ucx/$(basename "$real")"
  [ -L "$site_mpich/lib/dep/ucx/$(basename "$mod")" ] ||
    ln -sfn "$(basename "$real")" "$site_mpich/lib/dep/ucx/$(basename "$mod")"
done

# --- site configuration and modules.d, rendered from scripts/podman-hpc/ ----------------
# podman-hpc's own store, not podman's: it mounts with fuse-overlayfs (its mount_program),
# and a store opened so once stays so for every podman call (20-containers.sh). `stackbuild
# export --to podman-hpc` copies an image from podman's store into this one, then migrates.
graph_root=${STACKBUILD_PODMAN_HPC_GRAPH_ROOT:-/var/lib/podman-hpc/storage}
run_root=${STACKBUILD_PODMAN_HPC_RUN_ROOT:-/run/podman-hpc}
mkdir -p "$graph_root" "$run_root"
render() {
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@GRAPH_ROOT@|$graph_root|g" -e "s|@RUN_ROOT@|$run_root|g" \
      -e "s|@SITE_MPICH@|$site_mpich|g" \
      -e "s|@SLURMD_SPOOL@|$slurmd_spool|g" "$1"
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
render "$here/scripts/podman-hpc/podman_hpc.yaml.in" > "$tmp/podman_hpc.yaml"
install_if_changed "$tmp/podman_hpc.yaml" "$etc/podman_hpc.yaml"
install_if_changed "$here/scripts/podman-hpc/01-mpich.conf" "$etc/01-mpich.conf"
render "$here/scripts/podman-hpc/modules.d/mpich.yaml.in" > "$tmp/mpich.yaml"
install_if_changed "$tmp/mpich.yaml" "$etc/modules.d/mpich.yaml"
# The OCI hook (podman-hpc's own hook_tool) that applies the modules' copy and bind rules.
"$prefix/bin/python" -m podman_hpc.configure_hooks --hooksd "$tmp/hooks.d" >/dev/null
install_if_changed "$tmp/hooks.d/02-hook_tool.json" "$etc/hooks.d/02-hook_tool.json"

# --- podman-hpc on PATH, with fuse-overlayfs-wrap findable (podman-hpc looks it up on PATH
# before it reads its config) and USER set (it falls back to $USER where getlogin fails).
# exec keeps the process the Slurm task: shared-run names its per-node container after the
# task's parent (slurmstepd), which all tasks of a step on a node share.
cat > "$tmp/podman-hpc" <<SH
#!/bin/sh
# podman-hpc for this site; written by stackbuild scripts/setup.d/35-podman-hpc.sh.
export USER="\${USER:-\$(id -un)}"
PATH="\$PATH:$prefix/bin"
exec $prefix/bin/podman-hpc "\$@"
SH
install_if_changed "$tmp/podman-hpc" "$bin" 0755

# --- check: the config loads, and --mpi swaps the MPICH in a tiny container -------------
podman-hpc infohpc >/dev/null
base=localhost/stackbuild/base:bookworm-minbase
if podman image exists "$base"; then
  if ! podman-hpc image exists "$base"; then
    podman save --format docker-archive "$base" | podman-hpc load >/dev/null
  fi
  # SLURM_LOCALID: outside Slurm, podman-hpc's shared-run cannot report its task id.
  SLURM_LOCALID=0 podman-hpc run --rm --mpi "$base" sh -c \
    "test -f /opt/udiImage/modules/mpich/$(basename "$mpich_real") && grep -q udiImage /etc/ld.so.conf.d/02-mpich.conf" || {
      echo "setup-host: podman-hpc run --mpi did not bind the site MPICH into $base" >&2; exit 1; }
fi
say "podman-hpc $version ready ($bin; site config $etc, site MPICH $site_mpich; squashfs" \
  "store \$SQUASH_DIR, else \$SCRATCH/storage, else /tmp/storage)"
