"""The whole workflow under Snakemake, run several times on one machine with different GPU slot
counts and compile settings: wall time, training samples per second and GPU utilization.

Each run is a fresh ``snakemake`` process in a fresh directory on the same small sweep project:
random-weight models of the real shapes (``--scale real``: a BERT-base-shaped SLM and a full
24-layer Qwen2-0.5B-shaped LLM) or tiny ones (``--scale tiny``, for a CPU check), and a synthetic
local dataset (random words of bert-base-uncased's vocabulary, random labels: the point is the
work, not the accuracy). A run is ``K:COMPILE[:N]``: ``gpu_slots_per_gpu: K`` on one GPU,
``training.compile: COMPILE`` and ``--resources gpu=N`` (default K). With N > K, Snakemake starts more
GPU jobs than there are slots: the extra ones start up and then wait in the slot claim, so a slot is
not left idle while the next job starts up. ``--device auto`` on a machine without CUDA pretends a
pool of one GPU: jobs claim its slots (lock files) and train on the CPU. ``1:off:1`` is the stand-in
for the pipeline before the GPU work (one job per GPU, eager, no job admitted beyond the slots); it
already has this code's data path, so a ratio against it understates the gain over the old pipeline.

All runs share one inductor cache directory (``TORCHINDUCTOR_CACHE_DIR``), new at the start: the
first compiled run compiles cold, as on a fresh machine; a later one finds the graphs cached, as
every run after the first does on a user's machine.

Per run: the wall time of the whole ``snakemake`` process, the training window (first training
job's start to the last one's end, from each run's ``timings.json``), training samples per second
over the wall and over that window, each training job's start-up, training seconds and ms per
step, and the GPU's mean utilization (``nvidia-smi`` every 200 ms) over the window and the run.

    .venv/bin/python benchmarks/bench_pipeline.py                 # CPU, tiny shapes: a check, here
    .venv/bin/python benchmarks/bench_pipeline.py --device auto --runs 1:off:1,1:off:2
    python3 benchmarks/bench_pipeline.py --scale real --device cuda --runs 1:off:1,4:auto:8 \\
        --out OUT.json                                            # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from common import (BERT_BASE_SHAPE, REPO, RESULTS, TINY_BERT_SHAPE, GpuSampler, fmt, machine_info,
                    median, minilm_dir, pick_device, print_table, save_bert, save_qwen2)

QWEN2_05B_SHAPE = dict(hidden_size=896, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2,
                       num_hidden_layers=24, vocab_size=151936, rms_norm_eps=1e-6, tie_word_embeddings=True,
                       max_position_embeddings=32768, rope_theta=1e6)
TINY_QWEN2_SHAPE = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                        num_hidden_layers=4, vocab_size=30522)
SCALES: dict[str, dict[str, Any]] = {
    # The measurement: BERT-base + Qwen2-0.5B, 6,400 training rows, 1 epoch, batch 32 x 100.
    "real": dict(slm=BERT_BASE_SHAPE, llm=QWEN2_05B_SHAPE, train=6400, validation=800, test=1000,
                 sweep=[0, 8, 16], n_samples=400, n_pcs=16, top_pc=5, max_length=100),
    "tiny": dict(slm=TINY_BERT_SHAPE, llm=TINY_QWEN2_SHAPE, train=640, validation=128, test=256,
                 sweep=[0, 2], n_samples=96, n_pcs=8, top_pc=3, max_length=64),
}


# ---------------------------------------------------------------- the project (once per benchmark)


def write_dataset(folder: Path, sizes: dict[str, int], seed: int = 0) -> None:
    """Random words of the tokenizer's vocabulary (8-90 per text) with random 0/1 labels, as JSONL."""
    words = [w for w in (minilm_dir() / "vocab.txt").read_text().split() if w.isalpha() and len(w) > 2]
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for split, n in sizes.items():
        with open(folder / f"{split}.jsonl", "w") as f:
            for _ in range(n):
                text = " ".join(rng.choices(words, k=rng.randint(8, 90)))
                f.write(json.dumps({"text": text, "label": rng.randint(0, 1)}) + "\n")


def write_project(work: Path, scale: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Models, data and the config every run shares (runs add their slots and compile setting)."""
    models, device = {}, str(pick_device(args.device))
    for name, make in (("slm", save_bert(scale["slm"], device=device)),
                       ("llm", save_qwen2(scale["llm"], tokenizer=True, device=device))):
        models[name] = work / "models" / name
        models[name].mkdir(parents=True)
        make(models[name])
    write_dataset(work / "data", {"train": args.train_rows or scale["train"], "validation": scale["validation"],
                                  "test": scale["test"]})
    return {
        "run": {"datasets": ["synthetic"], "slms": ["slm"], "llms": ["llm"],
                "methods": ["base", "pifi_last", "pifi_ilm", "pifi_sweep"], "seeds": args.seeds},
        "datasets": {"synthetic": {"source": "local", "path": str(work / "data")}},
        "models": {name: {"source": "local", "name": name, "path": str(path)} for name, path in models.items()},
        "selection": {"n_samples": scale["n_samples"], "n_pcs": scale["n_pcs"], "top_pc": scale["top_pc"],
                      "selectors": ["ilm_pc_patching", "last"], "stability_resamples": 0},
        "sweep": {"layers": args.sweep or scale["sweep"]},
        "statistics": {"n_resamples": 1000},
        "training": {"epochs": args.epochs, "max_length": scale["max_length"]},
        "device": args.device,
        "gpus": None if args.device == "cpu" else [0],  # one GPU, or one pretended on a CPU machine
    }


# ---------------------------------------------------------------- one run

def run_pipeline(index: int, slots: int, compile_setting: str, gpu_jobs: int, project: dict[str, Any],
                 work: Path, args: argparse.Namespace, *, cache: str) -> dict[str, Any]:
    folder = work / f"run{index}-k{slots}-{compile_setting}-n{gpu_jobs}"
    folder.mkdir()
    config = {**project, "gpu_slots_per_gpu": slots, "gpu_lock_dir": str(folder / "locks"),
              "training": {**project["training"], "compile": {"on": True, "off": False}.get(compile_setting,
                                                                                            compile_setting)}}
    (folder / "bench.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor-cache"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(folder),
               "--configfile", str(folder / "bench.yaml"), "--cores", str(args.cores),
               "--resources", f"gpu={gpu_jobs}", "--rerun-incomplete"]
    sampler = GpuSampler()
    time.sleep(0.5)
    started = time.time()
    with open(folder / "snakemake.log", "w") as log:
        proc = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=args.timeout)
    ended = time.time()
    sampler.stop()
    log_text = (folder / "snakemake.log").read_text()
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", log_text)
    jobs = [json.loads(p.read_text()) | {"run": str(p.parent.relative_to(folder / "results" / "runs"))}
            for p in sorted((folder / "results" / "runs").glob("**/timings.json"))]
    entry: dict[str, Any] = {
        "run": index, "slots": slots, "compile": compile_setting, "gpu_jobs": gpu_jobs,
        "returncode": proc.returncode,
        "wall_seconds": ended - started, "snakemake_jobs": int(done[-1][1]) if done else None,
        "inductor_cache": cache,
        "training_jobs": jobs,
    }
    if proc.returncode != 0:
        entry["log_tail"] = log_text[-4000:]
    if jobs:
        window = (min(j["started_at"] for j in jobs), max(j["finished_at"] for j in jobs))
        samples = sum(j["samples"] for j in jobs)
        util, _, n = sampler.mean(*window)
        util_all, memory, n_all = sampler.mean(started, ended)
        entry.update({
            "training_window_seconds": window[1] - window[0],
            "training_samples": samples,
            "samples_per_s_wall": samples / (ended - started),
            "samples_per_s_training_window": samples / (window[1] - window[0]),
            "startup_seconds_median": median([j["startup_seconds"] for j in jobs]),
            "train_seconds_median": median([j["train_seconds"] for j in jobs]),
            "ms_per_step_median": median([1e3 * j["train_seconds"] / j["steps"] for j in jobs if j["steps"]]),
            "gpu_util_mean_training_window": util, "gpu_util_samples_training_window": n,
            "gpu_util_mean_whole_run": util_all, "gpu_util_samples_whole_run": n_all,
            "gpu_memory_used_max_mib": memory,
            # (seconds since the run's start, utilization %): where the GPU idled, not only how much
            "gpu_util_trace": [[round(t - started, 2), u] for t, u, _ in sampler.samples if started <= t <= ended],
        })
    selections = sorted((folder / "results" / "selection").glob("**/selection.json"))
    entry["selected_layers"] = {str(p.parent.relative_to(folder / "results" / "selection")):
                                json.loads(p.read_text())["layer"] for p in selections}
    if not args.keep:
        shutil.rmtree(folder / "results" / "runs", ignore_errors=True)  # checkpoints: GBs at the real scale
    return entry


# ---------------------------------------------------------------- report

def ratios(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Every run's samples/s against the first run's (the baseline), over the wall and the training window."""
    base, out = runs[0], {}
    for entry in runs[1:]:
        for key in ("samples_per_s_wall", "samples_per_s_training_window"):
            if base.get(key) and entry.get(key):
                name = f"run{entry['run']}_{label(entry)}"
                out[f"{name}_over_run0_{key}"] = entry[key] / base[key]
    return out


def label(entry: dict[str, Any]) -> str:
    return f"{entry['slots']}x{entry['compile']}_n{entry.get('gpu_jobs', entry['slots'])}"


def write(args: argparse.Namespace, runs: list[dict[str, Any]], started: float, project: dict[str, Any]) -> None:
    from pifi.artifacts import write_json

    settings = vars(args) | {
        "out": str(args.out), "project": project,
        "data": "synthetic: random words of bert-base-uncased's vocabulary, 8-90 per text, random 0/1 labels"}
    write_json(args.out, {"benchmark": "pipeline", "machine": machine_info(pick_device(args.device)),
                          "settings": settings, "run_seconds": time.time() - started, "runs": runs,
                          "ratios": ratios(runs)})
    print(f"wrote {args.out}", flush=True)


def parse_run(item: str, parser: argparse.ArgumentParser) -> tuple[int, str, int]:
    """``SLOTS:COMPILE[:GPU_JOBS]`` as (slots, compile, GPU jobs)."""
    slots, compile_setting, *rest = item.split(":")
    if compile_setting not in ("off", "auto", "on") or len(rest) > 1:
        parser.error(f"run {item!r}: expected SLOTS:COMPILE[:GPU_JOBS], COMPILE off/auto/on")
    return int(slots), compile_setting, int(rest[0]) if rest else int(slots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                        help="the config's device; auto without CUDA pretends one GPU (slot claims, CPU training)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    parser.add_argument("--runs", default="1:off:1,1:off:2",
                        help="comma-separated SLOTS:COMPILE[:GPU_JOBS] (compile: off, auto or on; GPU_JOBS = "
                             "--resources gpu=, default SLOTS), run in this order; "
                             "the first is the ratios' baseline")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[1])
    parser.add_argument("--sweep", type=lambda s: [int(x) for x in s.split(",")], default=None,
                        help="layers of the sweep (default: the scale's)")
    parser.add_argument("--train-rows", type=int, default=None, help="default: the scale's")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--cores", type=int, default=min(os.cpu_count() or 2, 12))
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run before it is killed")
    parser.add_argument("--deadline", type=float, default=None,
                        help="skip the runs still to come once this many seconds have passed (a device lease)")
    parser.add_argument("--work", type=Path, default=None, help="keep the project here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep every run's checkpoints")
    parser.add_argument("--out", type=Path, default=RESULTS / "pipeline.json")
    args = parser.parse_args()
    plan = [parse_run(item, parser) for item in args.runs.split(",")]
    started = time.time()
    work = args.work or Path(tempfile.mkdtemp(prefix="pifi-bench-pipeline-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"writing the {args.scale} project to {work} ...", flush=True)
    project = write_project(work, SCALES[args.scale], args)
    print(f"  done in {time.time() - started:.1f} s", flush=True)
    runs: list[dict[str, Any]] = []
    cache = "cold"  # until a compiled run has filled the shared inductor cache
    for index, (item, (slots, compile_setting, gpu_jobs)) in enumerate(zip(args.runs.split(","), plan)):
        if args.deadline is not None and time.time() - started > args.deadline:
            print(f"skipping run {index} ({item}) and the rest: past --deadline {args.deadline:.0f} s", flush=True)
            break
        print(f"run {index}: {slots} slot(s), compile {compile_setting}, {gpu_jobs} GPU jobs at once ...",
              flush=True)
        entry = run_pipeline(index, slots, compile_setting, gpu_jobs, project, work, args,
                             cache=cache if compile_setting != "off" else "unused")
        if compile_setting != "off":
            cache = "warm"
        runs.append(entry)
        print(f"  exit {entry['returncode']} in {entry['wall_seconds']:.1f} s; "
              f"{fmt(entry.get('samples_per_s_wall'))} samples/s over the wall; "
              f"GPU util {fmt(entry.get('gpu_util_mean_training_window'))} % in training", flush=True)
        if entry["returncode"] != 0:
            print(entry.get("log_tail", ""), flush=True)
        write(args, runs, started, project)  # partial results survive a later timeout
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(["run", "slots", "compile", "GPU jobs", "exit", "wall s", "jobs", "train jobs", "train window s",
                 "samples/s wall", "samples/s window", "start-up s (med)", "ms/step (med)", "GPU util % train",
                 "GPU util % run"],
                [[e["run"], e["slots"], e["compile"], e["gpu_jobs"], e["returncode"], fmt(e["wall_seconds"]), e["snakemake_jobs"],
                  len(e["training_jobs"]), fmt(e.get("training_window_seconds")), fmt(e.get("samples_per_s_wall")),
                  fmt(e.get("samples_per_s_training_window")), fmt(e.get("startup_seconds_median")),
                  fmt(e.get("ms_per_step_median")), fmt(e.get("gpu_util_mean_training_window")),
                  fmt(e.get("gpu_util_mean_whole_run"))] for e in runs])
    for name, value in ratios(runs).items():
        print(f"{name}: {value:.2f}x")


if __name__ == "__main__":
    main()
