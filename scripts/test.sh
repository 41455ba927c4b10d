#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite: lint, then pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k tiling (add -n 0 to run in this
# process only: quicker for a few tests).
# The suite runs on one pytest-xdist worker per core (at most 4), a test file per worker:
# most of its time is processes starting (vspipe, ffmpeg, the CLI each import torch),
# which leave the second core idle when run one after another.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
prepare_venv dev
"$VENV_PY" -m ruff check .
"$VENV_PY" -m pytest -n auto --maxprocesses 4 --dist loadfile "$@"
