#!/usr/bin/env bash
# The Quick start's main job: set up (first run only), then upscale the bundled sample x4
# with the default model (realesr-animevideov3) into out/sample-x4.mp4, audio kept.
# Usage: scripts/demo.sh [INPUT] [OUTPUT] [upscale options, e.g. --source builtin]
# (an existing OUTPUT is replaced). A relative INPUT or OUTPUT is taken from the directory
# you run it in; the defaults live in the checkout.
set -euo pipefail
caller=$PWD
root=$(cd "$(dirname "$0")/.." && pwd)
from_caller() {  # $1 as an absolute path, relative ones taken from where we were called
  case $1 in
    /*) printf '%s' "$1" ;;
    *) printf '%s' "$caller/$1" ;;
  esac
}
if [ $# -ge 1 ]; then input=$(from_caller "$1"); else input=$root/samples/sample.mp4; fi
if [ $# -ge 2 ]; then output=$(from_caller "$2"); else output=$root/out/sample-x4.mp4; fi
cd "$root"
source scripts/venv.sh
prepare_venv dev
_step "upscaling with vs-coreml-esrgan upscale (its progress follows)"
mkdir -p "$(dirname "$output")"
vs-coreml-esrgan upscale "$input" "$output" --force "${@:3}"
echo "Done: $output"
