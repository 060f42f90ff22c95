"""Several training jobs sharing one GPU, as the pipeline runs them (``gpu_slots_per_gpu``), without Snakemake.

For each configuration (K workers, compile on or off) K fresh processes start at once; each does
what one training job (``workflow/scripts/train.py``) does: build the classifier with
``build_classifier`` (an SLM loaded from its checkpoint plus one frozen decoder layer of an LLM),
pad synthetic token rows into a ``TokenizedSplit``, ``train_classifier`` for one epoch at batch 32,
then ``predict_proba`` on the test rows. The parent samples the GPU's utilization with
``nvidia-smi`` while they run.

Per worker: wall time (launch to exit), time to the first finished step (interpreter start,
imports, model build, data, compile), steady training samples/s (from step 10 to the last step,
synchronized) and the epoch's samples/s. Per configuration: the sum of the workers' steady samples/s,
rows trained per second of the whole configuration's wall time, and the mean GPU utilization over
the training window (first finished step of any worker to last step of any worker).

    .venv/bin/python benchmarks/bench_gpu_slots.py --device cpu --model tiny          # a check, here
    python3 benchmarks/bench_gpu_slots.py --device cuda --model bert-base --out OUT.json  # on a GPU
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common import (BERT_BASE_SHAPE, RESULTS, TINY_BERT_SHAPE, GpuSampler, fmt, machine_info, made_once, median,
                    print_table, save_bert, save_qwen2)

BATCH = 32
STEADY_FROM = 10  # steps before the steady-throughput window opens (compiles and graph recordings done)
QWEN2_05B_LAYER_SHAPE = dict(hidden_size=896, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2,
                             num_hidden_layers=2, vocab_size=1024, rms_norm_eps=1e-6, tie_word_embeddings=True,
                             max_position_embeddings=32768)
TINY_QWEN2_SHAPE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                        num_hidden_layers=2, vocab_size=1024)


# ---------------------------------------------------------------- checkpoints (parent, once)

def checkpoints(model: str) -> tuple[Path, Path]:
    if model == "bert-base":
        return (made_once("slots-bert-base-random", save_bert(BERT_BASE_SHAPE), "random BERT-base weights"),
                made_once("slots-qwen2-0.5b-shaped-2-layers", save_qwen2(QWEN2_05B_LAYER_SHAPE),
                          "a random Qwen2-0.5B-shaped checkpoint with 2 layers"))
    return (made_once("slots-tiny-bert", save_bert(TINY_BERT_SHAPE), "a tiny random BERT"),
            made_once("slots-tiny-qwen2", save_qwen2(TINY_QWEN2_SHAPE), "a tiny random Qwen2"))


# ---------------------------------------------------------------- one job (worker process)

def synthetic_tokens(n: int, split: str, seed: int, max_length: int, ids: dict[str, int],
                     vocab: int) -> dict[str, torch.Tensor]:
    """``n`` rows of 20..max_length tokens ([CLS] random ids [SEP]), flat, as the tokenize rule stores them."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min(20, max_length), max_length + 1, (n,), generator=g)
    body = torch.randint(1000, vocab, (int(lengths.sum()),), generator=g)
    starts = torch.cumsum(lengths, 0) - lengths
    body[starts] = ids["cls"]
    body[starts + lengths - 1] = ids["sep"]
    return {f"{split}.input_ids": body.to(torch.int32), f"{split}.lengths": lengths.to(torch.int32),
            f"{split}.token_type_ids": torch.zeros(len(body), dtype=torch.int8),
            f"{split}.labels": torch.randint(0, 2, (n,), generator=g)}


def worker(job: dict[str, Any]) -> dict[str, Any]:
    imported = time.time()
    from pifi.model import ModelSpec, build_classifier
    from pifi.tokens import TokenizedSplit
    from pifi.training import TrainingConfig, predict_proba, seed_everything, train_classifier

    torch.set_num_threads(job["threads"])  # as start_job does with the rule's threads
    device = torch.device(job["device"])
    seed = job["seed"]
    steps: list[float] = []
    n_steps = -(-job["train_rows"] // BATCH)
    marks: dict[str, float] = {}

    def on_step(optimizer, args, kwargs) -> None:
        steps.append(0.0)
        k = len(steps)
        if k in (1, STEADY_FROM, n_steps):  # three syncs per run: the window's ends are the GPU's, not the host's
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks[{1: "first", STEADY_FROM: "steady_from", n_steps: "last"}.get(k, "x")] = time.time()
            if k == 1 and n_steps == 1:
                marks["last"] = marks["first"]

    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(on_step)
    seed_everything(seed)
    spec = ModelSpec(method="pifi", slm_path=job["slm"], num_labels=2, llm_path=job["llm"], llm_layer=1,
                     max_length=job["max_length"])
    model = build_classifier(spec)
    built = time.time()
    ids = job["ids"]
    splits = {}
    for split, n, s in (("train", job["train_rows"], seed), ("validation", job["validation_rows"], 1000),
                        ("test", job["test_rows"], 2000)):
        tensors = synthetic_tokens(n, split, s, job["max_length"], ids, job["vocab"])
        splits[split] = TokenizedSplit.from_tensors(tensors, split, pad_id=ids["pad"], width=job["max_length"])
    cfg = TrainingConfig(epochs=1, batch_size=BATCH, max_length=job["max_length"], compile=job["compile"], seed=seed)
    result = train_classifier(model, splits["train"], splits["validation"], cfg, device)
    trained = time.time()
    model.load_state_dict(result.best_state, strict=False)
    probabilities = predict_proba(model, splits["test"].to(device), cfg.eval_batch_size, device)
    predicted = time.time()
    out = {"launched": job["launched"], "imported": imported, "built": built, "trained": trained,
           "predicted": predicted, "steps": len(steps), **marks, "train_seconds": result.train_seconds,
           "test_rows_scored": int(probabilities.shape[0]), "history": result.history,
           "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


# ---------------------------------------------------------------- one configuration (parent)

def run_config(k: int, compile_on: bool, common_job: dict[str, Any], timeout: float) -> dict[str, Any]:
    sampler = GpuSampler()
    time.sleep(0.5)
    tmp = Path(tempfile.mkdtemp(prefix="slots-"))
    started = time.time()
    procs = []
    for i in range(k):
        job = {**common_job, "compile": "auto" if compile_on else False, "seed": i, "launched": time.time()}
        spec, result = tmp / f"job{i}.json", tmp / f"result{i}.json"
        spec.write_text(json.dumps(job))
        log = open(tmp / f"job{i}.log", "w")
        procs.append((subprocess.Popen([sys.executable, __file__, "--worker", str(spec), str(result)],
                                       stdout=log, stderr=subprocess.STDOUT), result, tmp / f"job{i}.log"))
    failures = []
    for proc, _, log_path in procs:
        try:
            rc = proc.wait(timeout=max(1.0, timeout - (time.time() - started)))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "timeout"
        if rc != 0:
            failures.append(f"rc {rc}: " + log_path.read_text()[-3000:])
    ended = time.time()
    sampler.stop()
    workers = [json.loads(r.read_text()) for _, r, _ in procs if r.exists()]
    rows = common_job["train_rows"]
    for w in workers:
        w["wall_seconds"] = w["predicted"] - w["launched"]
        w["time_to_first_step"] = w["first"] - w["launched"]
        w["startup_before_training"] = w["built"] - w["launched"]
        steady_steps = w["steps"] - STEADY_FROM
        w["steady_samples_per_s"] = (steady_steps * BATCH / (w["last"] - w["steady_from"])
                                     if steady_steps > 0 and w["last"] > w["steady_from"] else None)
        w["steady_ms_per_step"] = (1e3 * (w["last"] - w["steady_from"]) / steady_steps if steady_steps > 0 else None)
        w["epoch_samples_per_s"] = rows / w["train_seconds"]
    entry: dict[str, Any] = {"k": k, "compile": compile_on, "wall_seconds": ended - started, "workers": workers,
                             "failures": failures}
    if workers:
        window = (min(w["first"] for w in workers), max(w["last"] for w in workers))
        util, mem, n = sampler.mean(*window)
        util_all, mem_all, n_all = sampler.mean(started, ended)
        steady = [w["steady_samples_per_s"] for w in workers if w["steady_samples_per_s"]]
        entry.update({
            "training_window_seconds": window[1] - window[0],
            "gpu_util_mean_training_window": util, "gpu_util_samples_training_window": n,
            "gpu_util_mean_whole_run": util_all, "gpu_memory_used_max_mib": mem_all,
            "steady_samples_per_s_sum": sum(steady) if steady else None,
            "trained_rows_per_s_of_window": len(workers) * rows / (window[1] - window[0]) if window[1] > window[0] else None,
            "trained_rows_per_s_of_wall": len(workers) * rows / (ended - started),
            "time_to_first_step_median": median([w["time_to_first_step"] for w in workers]),
            "wall_seconds_median": median([w["wall_seconds"] for w in workers]),
            "steady_ms_per_step_median": median([w["steady_ms_per_step"] for w in workers if w["steady_ms_per_step"]])
            if steady else None,
        })
    shutil.rmtree(tmp, ignore_errors=True)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--model", choices=("bert-base", "tiny"), default="bert-base")
    parser.add_argument("--configs", default="1:eager,1:compiled,4:compiled,4:eager",
                        help="comma-separated K:eager|compiled, run in this order")
    parser.add_argument("--train-rows", type=int, default=3200)
    parser.add_argument("--validation-rows", type=int, default=320)
    parser.add_argument("--test-rows", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (a rule's default: 1)")
    parser.add_argument("--timeout", type=float, default=240, help="seconds per configuration before its workers are killed")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_slots.json")
    args = parser.parse_args()
    started = time.time()
    slm, llm = checkpoints(args.model)
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(slm)
    ids = {"pad": tokenizer.pad_token_id, "cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id}
    common_job = {"device": args.device, "slm": str(slm), "llm": str(llm), "threads": args.threads, "ids": ids,
                  "vocab": AutoConfig.from_pretrained(slm).vocab_size, "max_length": args.max_length,
                  "train_rows": args.train_rows, "validation_rows": args.validation_rows, "test_rows": args.test_rows}
    configs = []
    for item in args.configs.split(","):
        k, mode = item.split(":")
        configs.append((int(k), mode == "compiled"))
    results = []
    for k, compile_on in configs:
        print(f"K={k} compile={'on' if compile_on else 'off'} ...", flush=True)
        entry = run_config(k, compile_on, common_job, args.timeout)
        results.append(entry)
        for failure in entry["failures"]:
            print("  FAILED:", failure, flush=True)
        print(f"  done in {entry['wall_seconds']:.1f} s; util {fmt(entry.get('gpu_util_mean_training_window'))}%, "
              f"steady sum {fmt(entry.get('steady_samples_per_s_sum'))} samples/s", flush=True)
        write(args, results, started)  # partial results survive a later timeout

    print()
    print_table(["K", "compile", "wall s", "first step s (median)", "ms/step (median)", "samples/s sum (steady)",
                 "rows/s of window", "rows/s of wall", "GPU util % (training)", "GPU util % (whole)", "failures"],
                [[e["k"], "on" if e["compile"] else "off", fmt(e["wall_seconds"]),
                  fmt(e.get("time_to_first_step_median")), fmt(e.get("steady_ms_per_step_median")),
                  fmt(e.get("steady_samples_per_s_sum")), fmt(e.get("trained_rows_per_s_of_window")),
                  fmt(e.get("trained_rows_per_s_of_wall")), fmt(e.get("gpu_util_mean_training_window")),
                  fmt(e.get("gpu_util_mean_whole_run")), len(e["failures"])] for e in results])
    write(args, results, started)


def write(args, results: list[dict[str, Any]], started: float) -> None:
    from pifi.artifacts import write_json

    by = {(e["k"], e["compile"]): e for e in results}
    ratios = {}
    base = by.get((1, False))
    for key, entry in by.items():
        if base and base.get("steady_samples_per_s_sum") and entry.get("steady_samples_per_s_sum"):
            ratios[f"K{key[0]}_{'compiled' if key[1] else 'eager'}_over_K1_eager_steady"] = (
                entry["steady_samples_per_s_sum"] / base["steady_samples_per_s_sum"])
        if base and base.get("trained_rows_per_s_of_wall") and entry.get("trained_rows_per_s_of_wall"):
            ratios[f"K{key[0]}_{'compiled' if key[1] else 'eager'}_over_K1_eager_wall"] = (
                entry["trained_rows_per_s_of_wall"] / base["trained_rows_per_s_of_wall"])
    device = torch.device(args.device)
    write_json(args.out, {"benchmark": "gpu_slots", "machine": machine_info(device),
                          "settings": {k: str(v) for k, v in vars(args).items()} | {
                              "batch": BATCH, "epochs": 1, "steady_from_step": STEADY_FROM,
                              "rows": "lengths uniform in 20..max_length, random ids, labels 0/1, fixed seeds",
                              "workers": "fresh python processes launched at once (subprocess), one per slot"},
                          "run_seconds": time.time() - started, "configs": results, "ratios": ratios})
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        Path(sys.argv[3]).write_text(json.dumps(worker(json.loads(Path(sys.argv[2]).read_text()))))
    else:
        main()
