#!/usr/bin/env bash
# Set up and run every check CI runs: lint, format, notebook hygiene, the whole test suite.
# Tests read the public data from ../shared/data unless EI_DATA_DIR names another copy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. "${VENV:-.venv}/bin/activate"
export EI_DATA_DIR=${EI_DATA_DIR:-$(cd .. && pwd)/shared/data}
export TOKENIZERS_PARALLELISM=false
ruff check .
ruff format --check .
python scripts/check_notebooks.py
python -m pytest -q --timeout=900 "$@"
