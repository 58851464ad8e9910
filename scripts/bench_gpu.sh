#!/usr/bin/env bash
# The prepared GPU benchmark: model throughput at batch 64 and 256, then end-to-end embedded throughput
# on CUDA with parallel decoding (decode included). Run on a GPU node after scripts/setup.sh with a CUDA
# torch (TORCH_SPEC=...). Prints images/s; the goal for the default model is >= 5,000 images/s on an H100.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$PY scripts/bench_model.py --device cuda --batch 64 256 --sizes 128 --seconds 5
DATA=${DATA:-../shared/data}
SCANNER_DEVICE=cuda SCANNER_DECODE_THREADS=${DECODE_THREADS:-16} \
    $PY scripts/bench_embedded.py --data "$DATA" --images "${IMAGES:-5000}" --batch-size 256
