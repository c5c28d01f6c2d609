#!/usr/bin/env bash
# Set up and run every check CI runs: lint, format, notebook hygiene, the whole test suite, and
# the vLLM/Ray extra's tests in their own venv (EI_SKIP_VLLM=1 skips that part).
# Tests read the public data from ../shared/data unless EI_DATA_DIR names another copy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${EI_SKIP_VLLM:-0}" != 1 ]; then
  bash scripts/setup_vllm.sh
  # the main suite then also starts vLLM's OpenAI server from that venv
  export EI_VLLM_PYTHON=${EI_VLLM_PYTHON:-$PWD/.venv-vllm/bin/python}
fi
# shellcheck disable=SC1091
. "${VENV:-.venv}/bin/activate"
export EI_DATA_DIR=${EI_DATA_DIR:-$(cd .. && pwd)/shared/data}
export TOKENIZERS_PARALLELISM=false
ruff check .
ruff format --check .
python scripts/check_notebooks.py
python -m pytest -q --timeout=900 "$@"
if [ "${EI_SKIP_VLLM:-0}" != 1 ]; then
  echo "== the vLLM/Ray extra (.venv-vllm)"
  .venv-vllm/bin/python -m pytest -q --timeout=900 tests/test_backend_vllm.py tests/test_ray_data.py
fi
