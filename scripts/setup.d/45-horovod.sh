#!/usr/bin/env bash
# Horovod in the validation environment (.venv), compiled like the CPU images' Horovod
# (scripts/native_horovod.py; the wheel is cached): `stackbuild validate --native` then
# runs the Horovod pass too, TensorFlow on 2 ranks included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
py=.venv/bin/python
if ! "$py" -c "import horovod.torch, horovod.tensorflow" 2>/dev/null; then
  "$py" scripts/native_horovod.py
fi
echo "setup-host: Horovod ready in .venv"
