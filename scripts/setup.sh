#!/usr/bin/env bash
# Set up fauxscan on a fresh machine: a virtual environment in .venv with the CPU build of torch
# and the package installed in editable mode with its dev extra. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and pinned: a bare "torch" requirement would pull a multi-GB CUDA build on machines
# that only need the CPU one. Set TORCH_SPEC to choose another build (e.g. a CUDA one on GPU nodes).
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
fi
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "fauxscan is installed: $(.venv/bin/scanner --help >/dev/null && echo .venv/bin/scanner)"
