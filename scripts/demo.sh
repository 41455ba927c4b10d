#!/usr/bin/env bash
# The Quick start's main job: set up (first run only), then upscale the bundled sample x4
# with the default model through `vspipe | ffmpeg`, keeping its audio.
# Usage: scripts/demo.sh [INPUT] [OUTPUT]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
prepare_venv dev
input=$(realpath "${1:-samples/sample.mp4}")
output=${2:-out/sample-x4.mp4}
mkdir -p "$(dirname "$output")"
ffmpeg=$("$VENV_PY" -c 'import shutil, imageio_ffmpeg
print(shutil.which("ffmpeg") or imageio_ffmpeg.get_ffmpeg_exe())')
partial="$output.partial.mp4"
trap 'rm -f "$partial"' EXIT
echo "Upscaling $input with realesr-animevideov3 (x4) ..."
vspipe -c y4m -a "source=$input" -p samples/upscale.vpy - \
  | "$ffmpeg" -hide_banner -loglevel error -y -i - -i "$input" -map 0:v -map '1:a?' \
      -c:v libx264 -crf 16 -preset medium -pix_fmt yuv420p -c:a copy "$partial"
mv -f "$partial" "$output"
echo "Done: $output"
