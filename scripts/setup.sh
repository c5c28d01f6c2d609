#!/usr/bin/env bash
# Create (or reuse) the virtualenv and install the kit with everything its notebooks and tests use.
# torch is installed first, pinned, so pip does not pull the multi-GB CUDA build on CPU machines;
# set TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0 --index-url ...") to pick another build.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# shellcheck disable=SC2086
python -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
python -m pip install -q -r requirements.txt
python -m pip install -q -e . --no-deps
python -m ipykernel install --sys-prefix --name python3 >/dev/null
