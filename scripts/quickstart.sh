#!/usr/bin/env bash
# The kit's main job on a fresh machine: set up, fetch the pinned public data, generate a small
# Ensemble-Instruct dataset with small open models from the hub (configs/quickstart.yaml).
#   bash scripts/quickstart.sh            # hub models (needs internet), ~minutes on a laptop CPU
#   bash scripts/quickstart.sh offline    # no internet: tiny local models + recorded GPT-3 outputs
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. "${VENV:-.venv}/bin/activate"
if [ -n "${EI_DATA_DIR:-}" ]; then
  python -m ensemble_instruct_lib verify-data
else
  python -m ensemble_instruct_lib fetch-data
fi
if [ "${1:-}" = "offline" ]; then
  python -m ensemble_instruct_lib ensemble-recorded --out outputs/recorded-ensemble
  python -m ensemble_instruct_lib make-tiny-models --out outputs/tiny-models
  python -m ensemble_instruct_lib run --config configs/offline-tiny.yaml
else
  python -m ensemble_instruct_lib run --config configs/quickstart.yaml
fi
