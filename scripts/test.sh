#!/usr/bin/env bash
# Set up, start local services, lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy scanner worker training
.venv/bin/python -m pytest -q "$@"
