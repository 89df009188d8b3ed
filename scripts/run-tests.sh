#!/usr/bin/env bash
# Set up this machine (Debian/Ubuntu, as root) and run every test: lint, fast, tools, engine
# and training tests. Extra arguments go to pytest (e.g. -m "not engine").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-host.sh
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== pytest"
exec .venv/bin/pytest "$@"
