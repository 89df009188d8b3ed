#!/usr/bin/env bash
# The main job, from a fresh Debian/Ubuntu machine (as root): set up the host, render and lint
# every shipped recipe with the real linters, then build and validate the CPU stack where the
# build and validation stages are available.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-host.sh
out=${STACKBUILD_OUT:-out}
sb=.venv/bin/stackbuild
echo "== render and lint every shipped recipe"
$sb lint
for recipe in recipes/*.yaml; do
  $sb render "$recipe" -o "$out/render/$(basename "$recipe" .yaml)"
done
echo "== rendered into $out/render"
