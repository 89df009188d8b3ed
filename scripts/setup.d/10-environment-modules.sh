#!/usr/bin/env bash
# environment-modules (Tcl modules) conflicts with Debian's lmod package, so unpack it
# into /opt/environment-modules and call its modulecmd.tcl with tclsh directly.
set -euo pipefail
dest=/opt/environment-modules
[ -f "$dest/usr/lib/x86_64-linux-gnu/modulecmd.tcl" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -qq environment-modules 2>/dev/null)
mkdir -p "$dest"
dpkg -x "$tmp"/environment-modules_*.deb "$dest"
echo "setup-host: environment-modules unpacked into $dest"
