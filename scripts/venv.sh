# Sourced by scripts/test.sh and scripts/demo.sh: find Python >= 3.12 and prepare the
# project's virtual environment in a per-user cache keyed by the dependency spec, so a
# rerun on the same machine is quick and a fresh machine builds it from nothing.
# After sourcing: $VENV_PY is the environment's python, the project installed editable.
# Usage: source scripts/venv.sh EXTRAS   (e.g. "dev" or "torch,models")

_project_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

_python_ok() {
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  local candidate root version
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3 python; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if _python_ok "$candidate"; then command -v "$candidate"; return 0; fi
  done
  # pyenv installs that are not selected: their shims fail, the interpreters themselves run.
  if command -v pyenv >/dev/null 2>&1; then
    root=$(pyenv root)
    for version in $(ls -1 "$root/versions" 2>/dev/null | sort -rV); do
      candidate="$root/versions/$version/bin/python3"
      if [ -x "$candidate" ] && _python_ok "$candidate"; then echo "$candidate"; return 0; fi
    done
  fi
  for candidate in /opt/homebrew/bin/python3.1[2-9] /usr/local/bin/python3.1[2-9] \
                   /Library/Frameworks/Python.framework/Versions/3.1[2-9]/bin/python3; do
    if [ -x "$candidate" ] && _python_ok "$candidate"; then echo "$candidate"; return 0; fi
  done
  return 1
}

# One progress line on stderr, with the time, whether or not stderr is a terminal (a CI
# log or `demo.sh 2>log` shows what the first run is doing and how long each step took).
_step() {
  echo "[$(date +%H:%M:%S)] $*" >&2
}

prepare_venv() {
  local extras=$1 python key cache venv
  if ! python=$(find_python); then
    echo "error: vs-coreml-esrgan needs Python 3.12 or newer (VapourSynth's wheels need it)," >&2
    echo "       and none was found. Install one (python.org, Homebrew 'python@3.12'," >&2
    echo "       or 'pyenv install 3.12'), or point PYTHON=/path/to/python3.12 at it." >&2
    return 1
  fi
  key=$("$python" - "$_project_root/pyproject.toml" "$extras" <<'PY'
import hashlib, json, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
spec = {"deps": project.get("dependencies", []),
        "extras": project.get("optional-dependencies", {}), "want": sys.argv[2],
        "python": sys.version.split()[0]}
print(hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16])
PY
) || return 1
  cache=${VS_COREML_ESRGAN_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vs-coreml-esrgan}
  venv="$cache/venv-$key"
  if [ ! -f "$venv/.complete" ]; then
    _step "Setting up $venv (first run only; on Linux about 6.3 GB, most of it PyTorch's" \
          "CUDA libraries: minutes over a fast line, longer over a slow one)"
    rm -rf "$venv"
    mkdir -p "$cache"
    _step "1/4 creating the virtual environment with $python"
    "$python" -m venv "$venv" || return 1
    _step "2/4 upgrading pip"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip || return 1
    _step "3/4 downloading and installing vs-coreml-esrgan[$extras]: PyTorch, VapourSynth," \
          "coremltools, PyAV ... (the long step; pip prints only warnings)"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
      -e "$_project_root[$extras]" || return 1
    # vspipe finds its Python through VapourSynth's per-user configuration.
    _step "4/4 configuring VapourSynth for this environment (vapoursynth config)"
    "$venv/bin/vapoursynth" config >/dev/null || return 1
    touch "$venv/.complete"
    _step "environment ready: $(du -sh "$venv" 2>/dev/null | cut -f1) in $venv"
  fi
  # The cache is shared by every checkout: point the editable install at this one.
  if [ "$(cd / && "$venv/bin/python" -c 'import vs_coreml_esrgan, pathlib
print(pathlib.Path(vs_coreml_esrgan.__file__).parent.parent)' 2>/dev/null)" != "$_project_root" ]
  then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
      -e "$_project_root" >/dev/null || return 1
  fi
  # The native namespace plugin of a development checkout: rebuilt every time (a fraction
  # of a second) so it never lags behind native/coreml_esrgan.c.
  "$venv/bin/python" "$_project_root/native/build_plugin.py" >/dev/null || return 1
  VENV_PY="$venv/bin/python"
  export PATH="$venv/bin:$PATH"
}
