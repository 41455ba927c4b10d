#!/usr/bin/env bash
# The Quick start's main job: set up (first run only), then upscale the bundled sample x4
# with the default model (realesr-animevideov3) into out/sample-x4.mp4, audio kept.
# Usage: scripts/demo.sh [INPUT] [OUTPUT] [upscale options, e.g. --source builtin]
# (an existing OUTPUT is replaced)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
prepare_venv dev
_step "upscaling with vs-coreml-esrgan upscale (its progress follows)"
input=${1:-samples/sample.mp4}
output=${2:-out/sample-x4.mp4}
mkdir -p "$(dirname "$output")"
vs-coreml-esrgan upscale "$input" "$output" --force "${@:3}"
echo "Done: $output"
