"""Reliability at scale: killed training resumed to identical results at five kill points, and two workflows
sharing one GPU lock dir without ever putting two jobs on one (gpu, slot). (The 51 bad inputs, each refused
with a message, are a test: tests/test_bad_inputs.py; the suite also kills one run and shares one lock dir.)

1. **Kills survived**: a tiny PiFi classifier (2-layer BERT, hidden 32, + layer 1 of a 3-layer Llama,
   hidden 48) is trained with ``pifi.training.train_classifier`` and a ``pifi.resume.ResumeStore`` in a
   fresh process, SIGKILLed at a chosen point, and run again; its best-epoch and last-epoch tensors, test
   probabilities and history are compared (``torch.equal``) with an unbroken run.
2. **Concurrent workflows**: ``tests/workflows/gpu_pool/Snakefile`` run twice at once on one lock dir
   (a pretend pool of 2 GPUs x 2 slots, no GPU needed); every job records its (gpu, slot) and its
   [start, end]: two jobs on one slot at overlapping times would be a collision.

    .venv/bin/python benchmarks/bench_reliability.py [--out benchmarks/results/reliability.json]
                                                     [--jobs-per-workflow 50] [--keep]

Exits 1 (after writing the JSON) if a resumed run differs from the unbroken one, or two jobs held one slot at
once.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from common import REPO, RESULTS, machine_info, print_table
from pifi.artifacts import read_safetensors, write_json, write_parquet, write_safetensors

GPU_POOL_SNAKEFILE = REPO / "tests" / "workflows" / "gpu_pool" / "Snakefile"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")  # the venv's CLI
# Kill test: the tiny run (4 epochs x 10 steps; each process ~3 s of imports, ~1 s of training here).
EPOCHS, BATCH, MAX_LENGTH, SEED, LLM_LAYER = 4, 16, 32, 0, 1
ROWS = {"train": 160, "validation": 64, "test": 64}
STEPS_PER_EPOCH = -(-ROWS["train"] // BATCH)


# ================================================================ 1. kills survived

def tokenizer_for(texts: list[str]):
    """A word-level tokenizer over ``texts`` with BERT's specials."""
    import re

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizers.Lowercase(), pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")


FILLER = ("the", "a", "film", "plot", "cast", "was", "is", "very", "quite", "and", "but", "story", "music", "ending",
          "scene", "actor", "really", "rather", "some", "of")


def toy_frame(n: int, seed: int, label_noise: float) -> pd.DataFrame:
    """Texts whose label is told by one cue word among fillers; some train labels flipped, so that the
    validation accuracy moves from epoch to epoch and the best epoch is a real choice."""
    import random

    rng, rows = random.Random(seed), []
    for i in range(n):
        words = rng.choices(FILLER, k=rng.randint(2, 10))
        words.insert(rng.randrange(len(words) + 1), rng.choice(("great", "fine", "superb") if i % 2
                                                               else ("awful", "dull", "poor")))
        label = 1 - i % 2 if rng.random() < label_noise else i % 2
        rows.append((" ".join(words), label))
    return pd.DataFrame(rows, columns=["text", "label"])


def write_kill_inputs(root: Path) -> None:
    """Tiny models and toy data for the training children (written once by the parent)."""
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    frames = {split: toy_frame(ROWS[split], seed, 0.1 if split == "train" else 0.0)
              for seed, split in enumerate(ROWS)}
    for split, frame in frames.items():
        write_parquet(root / "data" / f"{split}.parquet", frame)
    tokenizer = tokenizer_for(frames["train"]["text"].tolist())
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=96,
                                         max_position_embeddings=64))
    for name, model in (("bert", bert), ("llama", llama)):
        model.save_pretrained(root / "models" / name)
        tokenizer.save_pretrained(root / "models" / name)


def child_train(root: Path, work: Path, kill: str, result_path: Path) -> None:
    """One training process (run as ``--child-train``): train, maybe SIGKILL itself at ``kill``, save results.

    ``kill``: ``none``; ``step:N`` (at this process's N-th training forward); ``epoch:N`` (in on_epoch of
    epoch N: epoch N-1's checkpoint is the last one); ``save:N`` (while epoch N's checkpoint is being
    written, before it replaces epoch N-1's).
    """
    from transformers import AutoTokenizer

    import pifi.resume
    from pifi.model import ModelSpec, build_classifier
    from pifi.resume import ResumeStore, fingerprint
    from pifi.tokens import TokenizedSplit
    from pifi.training import TrainingConfig, predict_proba, seed_everything, train_classifier

    print(f"library {library_digest(Path(pifi.resume.__file__).parent)}", flush=True)  # the code this run used
    torch.set_num_threads(1)  # two children run at once on this 2-core machine
    cpu = torch.device("cpu")
    tokenizer = AutoTokenizer.from_pretrained(root / "models" / "bert")
    splits = {split: TokenizedSplit.from_frame(tokenizer, pd.read_parquet(root / "data" / f"{split}.parquet"),
                                               MAX_LENGTH) for split in ROWS}
    spec = ModelSpec(method="pifi", slm_path=str(root / "models" / "bert"), num_labels=2, dropout=0.2,
                     llm_path=str(root / "models" / "llama"), llm_layer=LLM_LAYER, max_length=MAX_LENGTH)
    seed_everything(SEED)
    model = build_classifier(spec)
    cfg = TrainingConfig(learning_rate=3e-3, batch_size=BATCH, epochs=EPOCHS, max_length=MAX_LENGTH,
                         eval_batch_size=64, compile=False, seed=SEED)
    store = ResumeStore(work / "resume", fingerprint(spec.to_dict(), cfg.__dict__))

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    how, _, at = kill.partition(":")
    on_epoch = None
    if how == "step":
        steps = [0]

        def count_step(module, args, output) -> None:
            if torch.is_grad_enabled():
                steps[0] += 1
                if steps[0] == int(at):
                    die()
        model.head.register_forward_hook(count_step)
    elif how == "epoch":
        def on_epoch(record: dict) -> None:  # noqa: F811
            if record["epoch"] == int(at):
                die()
    elif how == "save":
        def write_or_die(path, tensors, metadata=None) -> None:
            if json.loads((metadata or {}).get("state", "{}")).get("epoch") == int(at):
                with open(Path(path).with_name(".epoch.partial"), "wb") as partial:  # a half-written file...
                    partial.write(b"\0" * 1024)
                die()  # ...and the kill before the atomic rename
            write_safetensors(path, tensors, metadata)
        pifi.resume.write_safetensors = write_or_die
    result = train_classifier(model, splits["train"], splits["validation"], cfg, cpu, resume=store,
                              on_epoch=on_epoch)
    final = {f"final.{k}": v.clone() for k, v in model.trainable_state_dict().items()}  # the last epoch's weights
    model.load_state_dict(result.best_state, strict=False)
    probabilities = predict_proba(model, splits["test"], cfg.eval_batch_size, cpu)
    write_safetensors(result_path, {**{f"best.{k}": v for k, v in result.best_state.items()}, **final,
                                    "test_probabilities": torch.from_numpy(probabilities)},
                      metadata={"history": json.dumps(result.history), "best_epoch": str(result.best_epoch),
                                "resumed_from_epoch": str(result.resumed_from_epoch)})
    store.clear()


KILL_CASES = [
    # (case, kill points of the successive runs; the last run finishes)
    ("during epoch 1 (step 4), no checkpoint yet", ["step:4"]),
    ("after epoch 1's checkpoint (end of epoch 2)", ["epoch:2"]),
    ("after epoch 2's checkpoint (end of epoch 3)", ["epoch:3"]),
    ("twice: mid epoch 2 (step 4), then end of epoch 4", [f"step:{STEPS_PER_EPOCH + 4}", f"epoch:{EPOCHS}"]),
    ("while writing epoch 2's checkpoint", ["save:2"]),
]


def run_child(root: Path, work: Path, kill: str, result_path: Path) -> subprocess.CompletedProcess:
    # The children import pifi from the snapshot taken by run_kills: every run of the comparison uses the same code.
    path = os.pathsep.join(filter(None, [str(root / "code"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONHASHSEED": "0", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, __file__, "--child-train", str(root), "--work", str(work),
                           "--kill", kill, "--result", str(result_path)],
                          capture_output=True, text=True, env=env, timeout=300)


def checkpoint_epoch(work: Path) -> int | None:
    state = work / "resume" / "epoch.safetensors"
    return json.loads(read_safetensors(state)[1]["state"])["epoch"] if state.exists() else None


def run_kill_case(root: Path, number: int, kills: list[str]) -> dict[str, Any]:
    work, result_path = root / f"kill{number}", root / f"kill{number}" / "result.safetensors"
    work.mkdir()
    runs = []
    for kill in [*kills, "none"]:
        started = time.perf_counter()
        proc = run_child(root, work, kill, result_path)
        library = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("library ")]
        runs.append({"kill": kill, "returncode": proc.returncode, "seconds": round(time.perf_counter() - started, 1),
                     "checkpoint_epoch_after": checkpoint_epoch(work), "library": library[0] if library else None,
                     **({"stderr_tail": proc.stderr[-1500:]} if proc.returncode not in (0, -signal.SIGKILL) else {})})
    return {"runs": runs, "result": str(result_path)}


def compare(reference: Path, candidate: Path) -> dict[str, Any]:
    ref_tensors, ref_meta = read_safetensors(reference)
    tensors, meta = read_safetensors(candidate)
    states = sorted(k for k in ref_tensors if k.startswith(("best.", "final.")))  # best and last epoch's weights
    same_names = set(ref_tensors) == set(tensors)
    identical_state = same_names and all(torch.equal(ref_tensors[k], tensors[k]) for k in states)
    identical_predictions = same_names and torch.equal(ref_tensors["test_probabilities"], tensors["test_probabilities"])
    differing = [k for k in states if k in tensors and not torch.equal(ref_tensors[k], tensors[k])]
    return {"tensors_compared": len(states), "identical_state": identical_state,
            "identical_predictions": identical_predictions,
            "identical_history": json.loads(meta["history"]) == json.loads(ref_meta["history"]),
            "best_epoch": int(meta["best_epoch"]), "reference_best_epoch": int(ref_meta["best_epoch"]),
            "resumed_from_epoch": int(meta["resumed_from_epoch"]), "differing_tensors": differing[:5]}


def run_kills(root: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    # A snapshot of the library for the children: an edit of src/pifi while they run (another session, an
    # editor's save) would otherwise make the reference and a resumed run use different code.
    shutil.copytree(REPO / "src" / "pifi", root / "code" / "pifi", ignore=shutil.ignore_patterns("__pycache__"))
    write_kill_inputs(root)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        reference_future = pool.submit(run_kill_case, root, 0, [])
        futures = [pool.submit(run_kill_case, root, n, kills) for n, (_, kills) in enumerate(KILL_CASES, start=1)]
        reference = reference_future.result()
        cases = [f.result() for f in futures]
    if reference["runs"][-1]["returncode"] != 0:
        raise SystemExit(f"the unbroken reference run failed:\n{reference['runs'][-1].get('stderr_tail', '')}")
    records = []
    for (name, kills), case in zip(KILL_CASES, cases):
        killed_ok = all(run["returncode"] == -signal.SIGKILL for run in case["runs"][:-1])
        finished = case["runs"][-1]["returncode"] == 0
        record = {"case": name, "kills": kills, "runs": case["runs"], "killed_by_sigkill": killed_ok,
                  "finished": finished}
        if finished:
            record.update(compare(Path(reference["result"]), Path(case["result"])))
        # runs on different code (should not happen with the snapshot) are not comparable, whatever the result
        record["mixed_library_versions"] = len({run["library"] for run in case["runs"] + reference["runs"]}) > 1
        record["identical"] = bool(killed_ok and finished and record.get("identical_state")
                                   and record.get("identical_predictions") and record.get("identical_history"))
        records.append(record)
    return records, {"runs": reference["runs"]}


# ================================================================ 2. concurrent workflows

def clean_env(lock_dir: Path) -> dict[str, str]:
    """This environment without GPU/SLURM variables that would steer the pool, with the shared lock dir."""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    env["PIFI_GPU_LOCK_DIR"] = str(lock_dir)
    return env


def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def slot_collisions(jobs: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """Pairs of jobs that held the same (gpu, slot) at overlapping times."""
    by_slot: dict[tuple, list[dict]] = defaultdict(list)
    for job in jobs:
        for pair in job["slots"]:
            by_slot[tuple(pair)].append(job)
    return [(a, b) for held in by_slot.values() for a, b in combinations(held, 2) if overlap(a, b)]


def peak_concurrency(jobs: list[dict[str, Any]]) -> int:
    events = sorted([(j["start"], 1) for j in jobs] + [(j["end"], -1) for j in jobs])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def run_concurrent(root: Path, jobs_per_workflow: int) -> dict[str, Any]:
    lock_dir, workdirs = root / "locks", [root / "work-a", root / "work-b"]
    gpus, slots_per_gpu = [0, 1], 2
    command = ["--cores", "4", "--resources", f"gpu={len(gpus) * slots_per_gpu}", "--quiet", "all",
               "--config", f"gpus={json.dumps(gpus)}", f"gpu_slots_per_gpu={slots_per_gpu}",
               f"n_gpu={jobs_per_workflow}", "gpu_sleep=0.05", "gpu_sleep_max=0.2", "gpu_wait_timeout=240"]
    started = time.monotonic()
    procs = [subprocess.Popen([str(SNAKEMAKE), "--snakefile", str(GPU_POOL_SNAKEFILE), "--directory", str(w),
                               *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=clean_env(lock_dir)) for w in workdirs]
    errors = [proc.communicate(timeout=400)[1] for proc in procs]
    wall = time.monotonic() - started
    per_workflow = [[json.loads(p.read_text()) for p in sorted((w / "gpu").glob("*.json"))] for w in workdirs]
    jobs = [job for records in per_workflow for job in records]
    use = Counter(f"gpu{gpu}.slot{slot}" for job in jobs for gpu, slot in job["slots"])
    collisions = slot_collisions(jobs)
    return {
        "workflows": len(workdirs), "jobs_expected": len(workdirs) * jobs_per_workflow, "jobs": len(jobs),
        "returncodes": [proc.returncode for proc in procs],
        "stderr_tails": [err[-1500:] for proc, err in zip(procs, errors) if proc.returncode != 0],
        "pool": f"{len(gpus)} pretend GPUs x {slots_per_gpu} slots", "slot_collisions": len(collisions),
        "collision_examples": [[a["pid"], b["pid"], a["slots"]] for a, b in collisions[:3]],
        "jobs_per_slot": dict(sorted(use.items())), "peak_concurrency": peak_concurrency(jobs),
        "jobs_without_exactly_one_slot": sum(len(job["slots"]) != 1 for job in jobs),
        "cuda_visible_devices_wrong": sum(job["cuda_visible_devices"] != str(job["slots"][0][0])
                                          for job in jobs if job["slots"]),
        "workflows_overlapped": any(overlap(a, b) for a in per_workflow[0] for b in per_workflow[1]),
        "distinct_pids": len({job["pid"] for job in jobs}), "wall_seconds": round(wall, 1),
        "settings": command,
    }


# ================================================================ main

def library_digest(package: Path = REPO / "src" / "pifi") -> str:
    """A hash of the library's sources: a run during which they changed may mix two versions."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "reliability.json", help="JSON to write")
    parser.add_argument("--jobs-per-workflow", type=int, default=50, help="GPU jobs in each of the two workflows")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (its path is printed)")
    parser.add_argument("--child-train", type=Path, help=argparse.SUPPRESS)  # internal: one training process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--kill", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_train is not None:
        child_train(args.child_train, args.work, args.kill, args.result)
        return

    root = Path(tempfile.mkdtemp(prefix="pifi-reliability-"))
    digest_before = library_digest()
    try:
        t1 = time.perf_counter()
        (root / "kills").mkdir()
        kills, reference = run_kills(root / "kills")
        t2 = time.perf_counter()
        concurrency = run_concurrent(root / "pool", args.jobs_per_workflow)
        t3 = time.perf_counter()
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    # --- report
    print(f"\n1. Kills survived ({t2 - t1:.1f} s; tiny PiFi run, {EPOCHS} epochs x {STEPS_PER_EPOCH} steps, "
          f"one fresh process per run)")
    print_table(["case", "runs", "killed", "checkpoint after kill", "resumed after", "tensors", "identical"],
                [[k["case"], len(k["runs"]), "yes" if k["killed_by_sigkill"] else "NO",
                  ", ".join(f"epoch {r['checkpoint_epoch_after']}" if r["checkpoint_epoch_after"] else "none"
                            for r in k["runs"][:-1]),
                  k.get("resumed_from_epoch", "-"), k.get("tensors_compared", "-"),
                  "yes" if k["identical"] else "not comparable (src/pifi changed)" if k["mixed_library_versions"] else
                  f"NO (state {k.get('identical_state')}, predictions {k.get('identical_predictions')}, "
                  f"history {k.get('identical_history')})"] for k in kills])
    for k in kills:
        if k["mixed_library_versions"]:
            print(f"  !!! NOT COMPARABLE: {k['case']}: src/pifi was edited while its runs ran; run the benchmark again")
        elif not k["identical"]:
            print(f"  !!! FAILURE: {k['case']}: resumed result differs from the unbroken run "
                  f"(e.g. {k.get('differing_tensors')}; best epoch {k.get('best_epoch')} vs "
                  f"{k.get('reference_best_epoch')}; runs {[(r['kill'], r['returncode']) for r in k['runs']]})")

    c = concurrency
    print(f"\n2. Concurrent workflows ({t3 - t2:.1f} s)")
    print_table(["workflows", "jobs", "pool", "slot collisions", "peak running", "jobs per slot", "wall s"],
                [[c["workflows"], f"{c['jobs']}/{c['jobs_expected']}", c["pool"], c["slot_collisions"],
                  c["peak_concurrency"], " ".join(f"{k}:{v}" for k, v in c["jobs_per_slot"].items()),
                  c["wall_seconds"]]])
    print(f"both workflows ran side by side: {c['workflows_overlapped']}; snakemake exit codes {c['returncodes']}")

    library_changed = library_digest() != digest_before
    if library_changed:
        print("\n!!! src/pifi changed while this ran: the kill runs used a snapshot taken at their start, but the "
              "workflow checks used the live code; run it again on a quiet tree")
    failures = [f"kill not survived identically: {k['case']}"
                 + (" (not comparable: src/pifi changed during the run)" if k["mixed_library_versions"] else "")
                 for k in kills if not k["identical"]]
    if c["slot_collisions"] or c["jobs"] != c["jobs_expected"] or any(c["returncodes"]) \
            or c["jobs_without_exactly_one_slot"] or c["cuda_visible_devices_wrong"]:
        failures.append(f"concurrent workflows: {c['slot_collisions']} collisions, {c['jobs']}/{c['jobs_expected']} "
                        f"jobs, exit codes {c['returncodes']}")
    survived = sum(k["identical"] for k in kills)
    kill_events = sum(len(k["kills"]) for k in kills if k["killed_by_sigkill"] and k["finished"])
    summary = (f"{kill_events} kills survived ({len(kills)} cases), "
               f"{'results identical' if survived == len(kills) else f'results identical in {survived} cases only'}; "
               f"{c['jobs']} concurrent jobs, {c['slot_collisions']} slot collisions")
    print(f"\n{summary}")
    write_json(args.out, {"benchmark": "reliability", "machine": machine_info(torch.device("cpu")),
                          "settings": {"kill_run": {"epochs": EPOCHS, "batch": BATCH, "rows": ROWS,
                                                    "max_length": MAX_LENGTH, "llm_layer": LLM_LAYER,
                                                    "slm": "BERT 2 layers hidden 32",
                                                    "llm": "Llama 3 layers hidden 48"},
                                       "jobs_per_workflow": args.jobs_per_workflow},
                          "seconds": {"kills": round(t2 - t1, 1),
                                      "concurrent": round(t3 - t2, 1)},
                          "library_digest": digest_before, "library_changed_during_run": library_changed,
                          "summary": summary, "failures": failures, "kills": kills, "kill_reference": reference,
                          "concurrent_workflows": concurrency})
    print(f"wrote {args.out}")
    if failures:
        print("\n!!! RELIABILITY FAILURES:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
