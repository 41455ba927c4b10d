#!/usr/bin/env bash
# Line coverage of the macOS-only Core ML modules when run here against the test doubles
# (tests/fakes/). Usage: scripts/mac_coverage.sh   (sets up the environment first)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
prepare_venv dev
"$VENV_PY" -m coverage run --source=vs_coreml_esrgan -m pytest -q \
  tests/test_coreml_runtime.py tests/test_coreml_gate.py tests/test_coreml_surfaces.py \
  tests/test_doctor.py
"$VENV_PY" -m coverage report -m --include="*/backends/coreml_*.py,*/backends/macos.py,\
*/backends/parity_gate.py,*/backends/fallback.py,*/backends/torch_gate.py,*/doctor.py"
