#!/usr/bin/env bash
# Prints the path of a `ptxas` (NVIDIA's PTX assembler) to validate the PTX the
# CUDA target emits, installing one when none is found. No GPU is needed.
#
# Looked for, in order: $MYTHOS_PTXAS; `ptxas` on PATH; the cached venv
# ${MYTHOS_CACHE_DIR:-$HOME/.cache/mythos}/cuda-venv, created on first use with
# the PyPI wheel `nvidia-cuda-nvcc` alone (--no-deps, about 140 MB; ptxas at
# nvidia/cu13/bin/ptxas, or nvidia/cuda_nvcc/bin/ptxas in CUDA 12 wheels; it is
# a static binary that needs nothing else). Progress goes to stderr; the
# path alone to stdout. Exits non-zero with a message when it cannot get one
# (e.g. no network): set MYTHOS_SKIP_PTXAS=1 to let the tests skip ptxas then.
set -euo pipefail

valid() { [ -n "$1" ] && [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }

if [ -n "${MYTHOS_PTXAS:-}" ]; then
    if valid "$MYTHOS_PTXAS"; then echo "$MYTHOS_PTXAS"; exit 0; fi
    echo "error: MYTHOS_PTXAS=$MYTHOS_PTXAS is not a working ptxas" >&2
    exit 1
fi

if p="$(command -v ptxas 2>/dev/null)" && valid "$p"; then echo "$p"; exit 0; fi

venv="${MYTHOS_CACHE_DIR:-$HOME/.cache/mythos}/cuda-venv"
find_in_venv() {
    local site
    for site in "$venv"/lib/python3*/site-packages/nvidia; do
        for p in "$site"/cu*/bin/ptxas "$site"/cuda_nvcc/bin/ptxas; do
            if valid "$p"; then echo "$p"; return 0; fi
        done
    done
    return 1
}
if find_in_venv; then exit 0; fi

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: no ptxas and no python3 to install one (pip install nvidia-cuda-nvcc)." >&2
    echo "       Install python3, put ptxas on PATH, or set MYTHOS_PTXAS=/path/to/ptxas." >&2
    exit 1
fi
echo "ptxas.sh: installing nvidia-cuda-nvcc (ptxas) into $venv" >&2
mkdir -p "$(dirname "$venv")"
install() {
    # A venv when python3 can make one (Debian needs python3-venv), else pip --target.
    if [ -x "$venv/bin/pip" ] || "$python" -m venv "$venv" >&2 2>/dev/null; then
        "$venv/bin/pip" install -q --disable-pip-version-check --no-deps nvidia-cuda-nvcc >&2
    else
        "$python" -m pip install -q --disable-pip-version-check --no-deps \
            --target "$venv/lib/python3/site-packages" nvidia-cuda-nvcc >&2
    fi
}
if ! install; then
    echo "error: could not install ptxas (pip install nvidia-cuda-nvcc into $venv failed;" >&2
    echo "       no network?). Put ptxas on PATH, set MYTHOS_PTXAS=/path/to/ptxas," >&2
    echo "       or set MYTHOS_SKIP_PTXAS=1 to skip the PTX validation." >&2
    exit 1
fi
if find_in_venv; then exit 0; fi
echo "error: nvidia-cuda-nvcc installed in $venv but no ptxas found in it" >&2
exit 1
