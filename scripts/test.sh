#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite: lint, then pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k tiling
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
prepare_venv dev
"$VENV_PY" -m ruff check .
"$VENV_PY" -m pytest "$@"
