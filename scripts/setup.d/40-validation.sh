#!/usr/bin/env bash
# Validation harness (validation/, tests/validation): CPU PyTorch and TensorFlow in .venv.
# torch comes from pip's local find-links (a CPU wheel); plain `torch` from PyPI is a
# multi-GB CUDA build, so the version is pinned. tensorflow-cpu brings h5py and keras.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
py=.venv/bin/python
if ! "$py" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  echo "setup-host: installing torch==2.13.0 (CPU) into .venv"
  "$py" -m pip install -q "torch==2.13.0"
fi
if ! "$py" -c "import tensorflow" 2>/dev/null; then
  echo "setup-host: installing tensorflow-cpu==2.21.0 into .venv"
  "$py" -m pip install -q "tensorflow-cpu==2.21.0"
fi
"$py" -c "import torch, tensorflow, h5py, numpy" >/dev/null
echo "setup-host: validation frameworks ready (torch, tensorflow-cpu)"
