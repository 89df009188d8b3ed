#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine (as root) for stackbuild: Debian packages,
# the project venv (.venv), then every scripts/setup.d/*.sh step in order.
# Idempotent: a second run only checks. Cache: $STACKBUILD_CACHE (default ~/.cache/stackbuild,
# which outlives the checkout, so a fresh clone on the same machine reuses it).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
export STACKBUILD_CACHE=${STACKBUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/stackbuild}
mkdir -p "$STACKBUILD_CACHE"

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-host: run as root (it installs Debian packages and configures container engines)" >&2
  exit 2
fi

mapfile -t want < <(grep -v '^\s*#' scripts/apt-packages.txt | awk 'NF{print $1}')
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.stackbuild-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup-host: installing stackbuild and test dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v 'is ignored' || true
  .venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v 'is ignored' || true
  .venv/bin/python -c "import stackbuild" && touch "$stamp"
fi

for step in scripts/setup.d/*.sh; do
  [ -e "$step" ] || continue
  bash "$step"
done
echo "setup-host: ready"
