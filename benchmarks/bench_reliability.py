"""Reliability: bad inputs refused with a message, killed training resumed to identical results, and two
workflows sharing one GPU lock dir without ever putting two jobs on one (gpu, slot).

1. **Bad inputs**: each case is built in its own temp dir and handed to the library function that
   guards against it (GPU lock dir, config keys, local datasets, safetensors artifacts, selection
   limits, model directories, layer indices). Expected: refused with a message (or, for
   ``drop_blank_texts``, the row dropped and counted; for texts shared between splits, a console
   line; for atomic writes beside another thread under umask 077, no file wider than 0600). A case
   that is *accepted* is a failure.
2. **Kills survived**: a tiny PiFi classifier (2-layer BERT, hidden 32, + layer 1 of a 3-layer Llama,
   hidden 48) is trained with ``pifi.training.train_classifier`` and a ``pifi.resume.ResumeStore`` in a
   fresh process, SIGKILLed at a chosen point, and run again; its best-epoch and last-epoch tensors, test
   probabilities and history are compared (``torch.equal``) with an unbroken run.
3. **Concurrent workflows**: ``tests/workflows/gpu_pool/Snakefile`` run twice at once on one lock dir
   (a pretend pool of 2 GPUs x 2 slots, no GPU needed); every job records its (gpu, slot) and its
   [start, end]: two jobs on one slot at overlapping times would be a collision.

    .venv/bin/python benchmarks/bench_reliability.py [--out benchmarks/results/reliability.json]
                                                     [--jobs-per-workflow 50] [--keep]

Exits 1 (after writing the JSON) if a bad input was accepted, a resumed run differs from the
unbroken one, or two jobs held one slot at once.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from common import REPO, RESULTS, machine_info, print_table
from pifi.artifacts import ArtifactError, read_json, read_safetensors, write_json, write_parquet, write_safetensors
from pifi.config import ConfigError, check_config_keys, sweep_layer_set
from pifi.selection_checks import check_data_limits, check_llm_limits, check_selection_limits
from pifi.data import DatasetError, overlap_line, prepare_dataset, prepare_splits
from pifi.gpu import UnsafeLockError, claim_gpus, release_gpus
from pifi.model_sources import ModelRef, ModelSourceError, resolve_model_dir

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
GPU_POOL_SNAKEFILE = REPO / "tests" / "workflows" / "gpu_pool" / "Snakefile"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")  # the venv's CLI
MESSAGE_CHARS = 200
CASE_SECONDS = 20  # a bad input must be refused, not hang (e.g. a FIFO as a lock file)
# The library's own errors: a refusal by anything else (KeyError, TypeError, ...) is not a message for users.
LIBRARY_ERRORS = (DatasetError, ConfigError, ArtifactError, ModelSourceError, UnsafeLockError)

# Kill test: the tiny run (4 epochs x 10 steps; each process ~3 s of imports, ~1 s of training here).
EPOCHS, BATCH, MAX_LENGTH, SEED, LLM_LAYER = 4, 16, 32, 0, 1
ROWS = {"train": 160, "validation": 64, "test": 64}
STEPS_PER_EPOCH = -(-ROWS["train"] // BATCH)


# ================================================================ 1. bad inputs

@dataclass
class Outcome:
    happened: str                 # refused / accepted! / dropped / shown / safe / wrong
    error: str = ""               # exception class
    message: str = ""             # first line the user sees
    problems: tuple[str, ...] = ()  # why the case failed or the message is unclear


def first_line(text: str) -> str:
    """The error's first line; a heading such as ``invalid config:`` gets the line after it."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()] or [""]
    line = lines[0]
    if line.endswith(":") and len(lines) > 1:
        line = f"{line} {lines[1]}"
    return line if len(line) <= MESSAGE_CHARS else line[:MESSAGE_CHARS - 3] + "..."


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def hung(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s (hung?)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


Mention = str | tuple[str, ...]  # a fragment the message must hold, or alternatives (any one will do)


def refused(call: Callable[[], Any], *, mention: tuple[Mention, ...] = (),
            after: Callable[[], str | None] | None = None) -> Outcome:
    """Run ``call``: it must raise one of the library's errors whose message contains every ``mention``."""
    try:
        with deadline(CASE_SECONDS):
            call()
    except Exception as error:  # noqa: BLE001 - any exception is a refusal; its class is judged below
        text = str(error)
        alternatives = [(m,) if isinstance(m, str) else m for m in mention]
        problems = [f"message lacks {' or '.join(map(repr, m))}" for m in alternatives
                    if not any(fragment in text for fragment in m)]
        if not isinstance(error, LIBRARY_ERRORS):
            problems.append(f"not a library error ({type(error).__name__})")
        outcome = Outcome("refused", type(error).__name__, first_line(text), tuple(problems))
    else:
        outcome = Outcome("accepted!", problems=("accepted silently",))
    side_effect = after() if after is not None else None
    if side_effect:
        outcome.problems += (side_effect,)
    return outcome


# --- builders ----------------------------------------------------------------------------------------------

def good_records(n: int = 20) -> list[dict[str, Any]]:
    return [{"text": f"row {i} says something {'good' if i % 2 else 'bad'}", "label": i % 2} for i in range(n)]


def write_jsonl_dir(directory: Path, train_lines: list[str]) -> Path:
    directory.mkdir(parents=True)
    (directory / "train.jsonl").write_text("\n".join(train_lines) + "\n", encoding="utf-8")
    (directory / "test.jsonl").write_text("\n".join(json.dumps(r) for r in good_records(10)) + "\n",
                                          encoding="utf-8")
    return directory


def jsonl_with(bad_line: str, at: int = 3) -> list[str]:
    """Good JSONL lines with ``bad_line`` as line ``at`` (1-based)."""
    lines = [json.dumps(r) for r in good_records()]
    return lines[:at - 1] + [bad_line] + lines[at - 1:]


def write_csv_dir(directory: Path, train: bytes) -> Path:
    directory.mkdir(parents=True)
    (directory / "train.csv").write_bytes(train)
    pd.DataFrame(good_records(10)).to_csv(directory / "test.csv", index=False)
    return directory


def csv_with(bad_row: bytes, at: int = 3) -> bytes:
    """A good CSV (header on line 1) with ``bad_row`` as line ``at``."""
    rows = [f'"{r["text"]}",{r["label"]}'.encode() for r in good_records()]
    lines = [b"text,label"] + rows
    return b"\n".join(lines[:at - 1] + [bad_row] + lines[at - 1:]) + b"\n"


def prepare(directory: Path, **kwargs: Any) -> Callable[[], Any]:
    return lambda: prepare_splits("bad_data", {"source": "local", "path": str(directory), **kwargs})


def claim_one(lock_dir: Path) -> Callable[[], Any]:
    """Claim GPU 0 of a pretend one-GPU pool in ``lock_dir``; anything claimed is released at once."""
    def call() -> None:
        saved = {k: os.environ.pop(k) for k in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES") if k in os.environ}
        try:
            claim_gpus(1, gpus=[0], lock_dir=lock_dir, timeout=2, poll_interval=0.05)
        finally:
            release_gpus()
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            os.environ.update(saved)
    return call


VICTIM_BYTES = b"precious user data\n"


def untouched(victim: Path) -> Callable[[], str | None]:
    return lambda: None if victim.read_bytes() == VICTIM_BYTES else f"victim {victim.name} was written to!"


def safetensors_file(tmp: Path) -> Path:
    path = tmp / "checkpoint.safetensors"
    write_safetensors(path, {"weight": torch.arange(256, dtype=torch.float32).reshape(16, 16),
                             "bias": torch.ones(16)}, metadata={"method": "pifi"})
    return path


def model_dir(tmp: Path, config: dict[str, Any] | None = None, files: dict[str, bytes] | None = None) -> Path:
    directory = tmp / "model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config or {"model_type": "bert", "hidden_size": 32}))
    for name, data in (files or {}).items():
        (directory / name).write_bytes(data)
    return directory


def resolve(directory: Path, name: str = "tiny_slm") -> Callable[[], Any]:
    return lambda: resolve_model_dir(name, {"source": "local", "path": str(directory)},
                                     work_dir=directory.parent / "work")


SELECTION = {"split": "train", "n_samples": 400, "n_pcs": 16, "top_pc": 5, "stability_resamples": 10,
             "stability_fraction": 0.8}


def info(counts: dict[int, int]) -> dict[str, Any]:
    return {"splits": {"train": {"label_counts": {str(k): v for k, v in counts.items()}}}}


# --- the cases -----------------------------------------------------------------------------------------------

def case_gpu_symlink(tmp: Path) -> Outcome:
    locks, victim = tmp / "locks", tmp / "victim"
    locks.mkdir(mode=0o700)
    victim.write_bytes(VICTIM_BYTES)
    (locks / "gpu0.slot0.lock").symlink_to(victim)
    return refused(claim_one(locks), mention=("gpu0.slot0.lock", "symlink"), after=untouched(victim))


def case_gpu_world_writable(tmp: Path) -> Outcome:
    locks = tmp / "locks"
    locks.mkdir()
    os.chmod(locks, 0o777)
    return refused(claim_one(locks), mention=("sticky", "chmod +t"),
                   after=lambda: "a lock file was created" if any(locks.iterdir()) else None)


def case_gpu_dir_symlink(tmp: Path) -> Outcome:
    real, link = tmp / "elsewhere", tmp / "locks"
    real.mkdir(mode=0o700)
    link.symlink_to(real)
    return refused(claim_one(link), mention=("is a symlink",),
                   after=lambda: "a lock file was created" if any(real.iterdir()) else None)


def case_gpu_fifo(tmp: Path) -> Outcome:
    locks = tmp / "locks"
    locks.mkdir(mode=0o700)
    os.mkfifo(locks / "gpu0.slot0.lock")
    return refused(claim_one(locks), mention=("not a regular file",))


def case_key(name: str, registry: str = "datasets") -> Callable[[Path], Outcome]:
    def case(tmp: Path) -> Outcome:
        entry = ({"source": "local", "path": "data"} if registry == "datasets"
                 else {"source": "local", "name": "m", "path": "m"})
        return refused(lambda: check_config_keys({registry: {name: entry}}, SCHEMA),
                       mention=("not a safe name",))
    return case


def case_repeated(section: str, key: str, values: list[Any]) -> Callable[[Path], Outcome]:
    def case(tmp: Path) -> Outcome:
        return refused(lambda: check_config_keys({section: {key: values}}, SCHEMA),
                       mention=(f"config.{section}.{key}: {values[-1]!r} is listed more than once",))
    return case


def case_rare_class(tmp: Path) -> Outcome:
    """A class with one training row and no validation file: carving a stratified validation split fails."""
    records = good_records() + [{"text": "the only row of class 2", "label": 2}]
    directory = write_jsonl_dir(tmp / "data", [json.dumps(r) for r in records])
    return refused(prepare(directory), mention=("dataset 'bad_data'", "class 2 has 1 row", "provide a validation split"))


def case_overlap_shown(tmp: Path) -> Outcome:
    """Test rows copied from train, with the default split_overlap (warn): kept, and said on the console."""
    directory = write_jsonl_dir(tmp / "data", [json.dumps(r) for r in good_records()])
    test = good_records()[:3] + [{"text": f"unseen test row {i}", "label": i % 2} for i in range(7)]
    (directory / "test.jsonl").write_text("\n".join(json.dumps(r) for r in test) + "\n", encoding="utf-8")
    splits, checks = prepare_dataset("bad_data", {"source": "local", "path": str(directory)})
    line = overlap_line("bad_data", checks["split_overlap"], test_rows=len(splits["test"])) or ""
    shared = checks["split_overlap"]["train_test"] + checks["split_overlap"]["validation_test"]
    problems = () if shared == 3 and "test row(s) also in" in line else (
        f"console line {line!r} for {shared} shared test rows",)
    return Outcome("shown" if not problems else "wrong", message=first_line(line), problems=problems)


def case_blank(fmt: str, value: str) -> Callable[[Path], Outcome]:
    def case(tmp: Path) -> Outcome:
        if fmt == "jsonl":
            directory = write_jsonl_dir(tmp / "data", jsonl_with(json.dumps({"text": value, "label": 0})))
        else:
            directory = write_csv_dir(tmp / "data", csv_with(f'"{value}",0'.encode() if value else b",0"))
        return refused(prepare(directory), mention=(f"train.{fmt}", "line(s) 3", "blank text"))
    return case


def case_blank_dropped(tmp: Path) -> Outcome:
    directory = write_jsonl_dir(tmp / "data", jsonl_with(json.dumps({"text": "  \t ", "label": 0})))
    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger, handler = logging.getLogger("pifi.data"), Capture(logging.WARNING)
    logger.addHandler(handler)
    try:
        splits = prepare_splits("bad_data", {"source": "local", "path": str(directory)}, drop_blank_texts=True)
    except Exception as error:  # noqa: BLE001
        return Outcome("wrong", type(error).__name__, first_line(str(error)), ("refused instead of dropping",))
    finally:
        logger.removeHandler(handler)
    kept = pd.concat([splits["train"], splits["validation"]])
    problems = []
    if len(kept) != len(good_records()) or kept["text"].str.strip().eq("").any():
        problems.append(f"kept {len(kept)} rows, expected {len(good_records())} without the blank one")
    if "train-000002" in set(kept["row_id"]):
        problems.append("the blank row (train-000002) is still there")
    if not any("dropped 1 of" in line for line in seen):
        problems.append("the drop was not logged")
    return Outcome("dropped" if not problems else "wrong", message=first_line(seen[0] if seen else ""),
                   problems=tuple(problems))


def case_jsonl_malformed(tmp: Path) -> Outcome:
    directory = write_jsonl_dir(tmp / "data", jsonl_with('{"text": "broken", "label": 1', at=4))
    return refused(prepare(directory), mention=("train.jsonl:4", "invalid JSON"))


def case_jsonl_not_object(tmp: Path) -> Outcome:
    directory = write_jsonl_dir(tmp / "data", jsonl_with('["a list", 1]', at=5))
    return refused(prepare(directory), mention=("train.jsonl:5", "JSON object"))


def case_csv_not_utf8(tmp: Path) -> Outcome:
    directory = write_csv_dir(tmp / "data", csv_with(b'"caf\xe9 au lait",1', at=3))
    return refused(prepare(directory), mention=("train.csv:3", "UTF-8"))


def case_csv_ragged_long(tmp: Path) -> Outcome:
    directory = write_csv_dir(tmp / "data", csv_with(b'"too many fields",1,extra', at=4))
    return refused(prepare(directory), mention=("train.csv",))


def case_csv_ragged_short(tmp: Path) -> Outcome:
    directory = write_csv_dir(tmp / "data", csv_with(b'"no label field"', at=4))
    # the user must learn which line lacks a field
    return refused(prepare(directory), mention=("train.csv", ("train.csv:4", "line(s) 4", "line 4")))


def case_csv_text_labels(tmp: Path) -> Outcome:
    directory = write_csv_dir(tmp / "data", csv_with(b'"a word label",positive', at=3))
    # the example shown should be the offending label, not the first one
    return refused(prepare(directory), mention=("label_map", "positive"))


def case_missing_column(tmp: Path) -> Outcome:
    directory = write_jsonl_dir(tmp / "data", [json.dumps(r) for r in good_records()])
    return refused(prepare(directory, text_column="sentence"), mention=("missing column", "sentence"))


def case_parquet(damage: str) -> Callable[[Path], Outcome]:
    """A damaged train.parquet. (Parquet files carry no checksum unless written with page checksums, so a
    same-size change of a *value* is undetectable; these damage the file's structure.)"""
    def case(tmp: Path) -> Outcome:
        directory = tmp / "data"
        directory.mkdir()
        path = directory / "train.parquet"
        write_parquet(path, pd.DataFrame(good_records()))
        data = path.read_bytes()
        if damage == "truncated":
            path.write_bytes(data[:len(data) // 2])
        elif damage == "footer":  # same size: the footer's metadata overwritten, length and magic kept
            path.write_bytes(data[:-48] + b"\xff" * 40 + data[-8:])
        elif damage == "first page":  # same size: the first page header and data inverted
            path.write_bytes(data[:4] + bytes(b ^ 0xFF for b in data[4:200]) + data[200:])
        else:  # a CSV saved under a .parquet name
            path.write_bytes(b"text,label\nhello,1\n")
        write_parquet(directory / "test.parquet", pd.DataFrame(good_records(10)))
        return refused(prepare(directory), mention=("train.parquet",))
    return case


def case_safetensors(damage: str) -> Callable[[Path], Outcome]:
    def case(tmp: Path) -> Outcome:
        path = safetensors_file(tmp)
        data = bytearray(path.read_bytes())
        if damage == "truncated":
            del data[-24:]
        elif damage == "flipped":  # same size, one data byte changed
            data[-40] ^= 0x01
        elif damage == "header":  # same size, one header byte changed
            data[12] ^= 0x20
        path.write_bytes(bytes(data))
        if damage == "unchecked":  # a plain safetensors file, written without pifi's checksum
            import safetensors.torch
            safetensors.torch.save_file({"weight": torch.zeros(4)}, str(path))
        return refused(lambda: read_safetensors(path), mention=(str(path),))
    return case


def case_json_checksum_key(tmp: Path) -> Outcome:
    path = tmp / "metrics.json"
    write_json(path, {"accuracy": 0.5})
    path.write_text(path.read_text().replace("pifi_sha256", "pifi_sha25"))  # one byte less in the key's name
    return refused(lambda: read_json(path), mention=(str(path), "missing or damaged"))


_UMASK_STRESS = """
import os, stat, sys, threading
os.umask(0o077)
from pifi.artifacts import write_json
out, writes = sys.argv[1], int(sys.argv[2])
done = threading.Event()
def writer():
    for i in range(writes):
        write_json(os.path.join(out, f"artifact{i}.json"), {"i": i})
    done.set()
thread = threading.Thread(target=writer)
thread.start()
plain = 0
while not done.is_set():
    open(os.path.join(out, f"plain{plain}.txt"), "w").close()
    plain += 1
thread.join()
wide = [name for name in os.listdir(out) if stat.S_IMODE(os.stat(os.path.join(out, name)).st_mode) & 0o077]
print(plain, writes, len(wide))
"""


def case_umask_threads(tmp: Path) -> Outcome:
    """Atomic writes on a background thread (as epoch checkpoints are) while the main thread creates
    files, under umask 077: no file may be readable by others (the umask is never toggled)."""
    result = subprocess.run([sys.executable, "-c", _UMASK_STRESS, str(tmp), "3000"], capture_output=True, text=True,
                            timeout=120, check=True)
    plain, writes, wide = (int(n) for n in result.stdout.split())
    message = f"{plain} files created beside {writes} atomic writes: {wide} with a mode wider than 0600"
    return Outcome("safe" if wide == 0 else "wrong", message=message,
                   problems=() if wide == 0 else (message,))


def case_selection(mention: tuple[Mention, ...], **changes: Any) -> Callable[[Path], Outcome]:
    def case(tmp: Path) -> Outcome:
        return refused(lambda: check_selection_limits({"selection": {**SELECTION, **changes}}), mention=mention)
    return case


def case_samples_over_rows(tmp: Path) -> Outcome:
    return refused(lambda: check_data_limits(info({0: 60, 1: 60}), SELECTION, ["ilm_pc_patching"], dataset="tiny"),
                   mention=("n_samples", "120 rows"))


def case_pcs_over_hidden(tmp: Path) -> Outcome:
    manifest = {"name": "tiny_llama", "hidden_size": 8}
    return refused(lambda: check_llm_limits(manifest, SELECTION, ["ilm_pc_patching"]), mention=("hidden size 8",))


def case_silhouette_over_hidden(tmp: Path) -> Outcome:
    manifest = {"name": "tiny_llama", "hidden_size": 12}
    selection = {**SELECTION, "n_pcs": 8}
    return refused(lambda: check_llm_limits(manifest, selection, ["silhouette"]), mention=("n_components 16",))


def case_folds_over_class(tmp: Path) -> Outcome:
    selection = {**SELECTION, "n_samples": 100}
    return refused(lambda: check_data_limits(info({0: 190, 1: 10}), selection, ["probe_cv"], dataset="tiny"),
                   mention=("probe_cv", "folds"))


def case_model_bin_only(tmp: Path) -> Outcome:
    return refused(resolve(model_dir(tmp, files={"pytorch_model.bin": b"\x80\x02pickle"})),
                   mention=("pytorch_model.bin", "never loaded"))


def case_model_bin_dummy_safetensors(tmp: Path) -> Outcome:
    directory = model_dir(tmp, files={"pytorch_model.bin": b"\x80\x02pickle", "model.safetensors": b"dummy"})
    return refused(resolve(directory), mention=("model.safetensors", "not a readable safetensors"))


def case_model_missing_shard(tmp: Path) -> Outcome:
    index = {"weight_map": {"embeddings.weight": "model-00001-of-00002.safetensors"}}
    directory = model_dir(tmp, files={"model.safetensors.index.json": json.dumps(index).encode()})
    return refused(resolve(directory), mention=("model-00001-of-00002.safetensors", "do not exist"))


def case_model_weights_outside(tmp: Path) -> Outcome:
    directory = model_dir(tmp, config={"model_type": "bert", "transformers_weights": "../outside.safetensors"})
    return refused(resolve(directory), mention=("outside",))


def case_model_unsafe_name(tmp: Path) -> Outcome:
    return refused(resolve(model_dir(tmp), name="../evil"), mention=("../evil", "not allowed"))


def case_layer(layer: int) -> Callable[[Path], Outcome]:
    def case(tmp: Path) -> Outcome:
        ref = ModelRef("tiny_llama", tmp, "llama", num_layers=3, hidden_size=48)
        return refused(lambda: ref.check_layer(layer), mention=(f"layer {layer}", "0..2"))
    return case


def case_sweep_layer(tmp: Path) -> Outcome:
    return refused(lambda: sweep_layer_set({"layers": [0, 3], "stride": 1}, 3), mention=("[3]", "out of range"))


BAD_INPUTS: list[tuple[str, str, str, Callable[[Path], Outcome]]] = [
    # (group, case, expected, builder)
    ("gpu lock", "lock file is a symlink to a victim file", "refused", case_gpu_symlink),
    ("gpu lock", "lock dir world-writable, no sticky bit", "refused", case_gpu_world_writable),
    ("gpu lock", "lock dir is a symlink", "refused", case_gpu_dir_symlink),
    ("gpu lock", "lock file is a FIFO", "refused", case_gpu_fifo),
    ("config", "dataset key '../../x'", "refused", case_key("../../x")),
    ("config", "model key 'a/b'", "refused", case_key("a/b", "models")),
    ("config", "dataset key '.hidden'", "refused", case_key(".hidden")),
    ("config", "dataset key 'x\\n' (trailing newline)", "refused", case_key("x\n")),
    ("config", "run.seeds [1, 1]", "refused", case_repeated("run", "seeds", [1, 1])),
    ("config", "run.datasets listed twice", "refused", case_repeated("run", "datasets", ["sst2", "sst2"])),
    ("config", "selection.selectors listed twice", "refused", case_repeated("selection", "selectors", ["first", "first"])),
    ("config", "sweep.layers [0, 4, 4]", "refused", case_repeated("sweep", "layers", [0, 4, 4])),
    ("data", "class with one train row, no validation file", "refused", case_rare_class),
    ("data", "3 test rows copied from train (split_overlap: warn)", "shown", case_overlap_shown),
    ("data", "blank text in JSONL", "refused", case_blank("jsonl", "")),
    ("data", "whitespace-only text in JSONL", "refused", case_blank("jsonl", "  \t ")),
    ("data", "blank text in CSV", "refused", case_blank("csv", "")),
    ("data", "whitespace-only text in CSV", "refused", case_blank("csv", "   ")),
    ("data", "whitespace-only text, drop_blank_texts", "dropped", case_blank_dropped),
    ("data", "malformed JSONL line", "refused", case_jsonl_malformed),
    ("data", "JSONL line not an object", "refused", case_jsonl_not_object),
    ("data", "non-UTF-8 CSV", "refused", case_csv_not_utf8),
    ("data", "ragged CSV (extra field)", "refused", case_csv_ragged_long),
    ("data", "ragged CSV (missing field)", "refused", case_csv_ragged_short),
    ("data", "CSV with word labels", "refused", case_csv_text_labels),
    ("data", "configured text column missing", "refused", case_missing_column),
    ("data", "truncated parquet", "refused", case_parquet("truncated")),
    ("data", "parquet footer corrupted (same size)", "refused", case_parquet("footer")),
    ("data", "parquet first page corrupted (same size)", "refused", case_parquet("first page")),
    ("data", "CSV text named train.parquet", "refused", case_parquet("csv")),
    ("artifact", "truncated safetensors", "refused", case_safetensors("truncated")),
    ("artifact", "same-size corrupted safetensors (data)", "refused", case_safetensors("flipped")),
    ("artifact", "same-size corrupted safetensors (header)", "refused", case_safetensors("header")),
    ("artifact", "safetensors without checksum", "refused", case_safetensors("unchecked")),
    ("artifact", "JSON whose checksum key is damaged", "refused", case_json_checksum_key),
    ("artifact", "atomic writes on a thread, umask 077", "safe", case_umask_threads),
    ("selection", "top_pc > n_pcs", "refused", case_selection(("selection.top_pc (20)",), top_pc=20)),
    ("selection", "n_pcs > n_samples", "refused",
     case_selection(("selection.n_samples (10)",), n_pcs=16, n_samples=10)),
    ("selection", "n_pcs > stability subset", "refused",
     case_selection(("stability subset (14",), n_samples=18, stability_fraction=0.8)),
    ("selection", "n_samples > rows of the split", "refused", case_samples_over_rows),
    ("selection", "n_pcs > LLM hidden size", "refused", case_pcs_over_hidden),
    ("selection", "silhouette components > LLM hidden size", "refused", case_silhouette_over_hidden),
    ("selection", "probe_cv folds > smallest class", "refused", case_folds_over_class),
    ("model", "only pytorch_model.bin", "refused", case_model_bin_only),
    ("model", "pytorch_model.bin + dummy model.safetensors", "refused", case_model_bin_dummy_safetensors),
    ("model", "shard index naming a missing shard", "refused", case_model_missing_shard),
    ("model", "config names weights outside the dir", "refused", case_model_weights_outside),
    ("model", "model name '../evil'", "refused", case_model_unsafe_name),
    ("model", "layer 3 of a 3-layer LLM", "refused", case_layer(3)),
    ("model", "layer -1 (check_layer)", "refused", case_layer(-1)),
    ("model", "sweep layer 3 of a 3-layer LLM", "refused", case_sweep_layer),
]


def run_bad_inputs(root: Path) -> list[dict[str, Any]]:
    records = []
    for number, (group, name, expected, build) in enumerate(BAD_INPUTS, start=1):
        tmp = root / f"case{number:02d}"
        tmp.mkdir(parents=True)
        try:
            outcome = build(tmp)
        except Exception as error:  # noqa: BLE001 - a case that could not even be built is reported, not hidden
            outcome = Outcome("error", type(error).__name__, first_line(str(error)), ("the case itself failed",))
        expected_ok = outcome.happened == expected
        failed = not expected_ok or any("accepted" in p or "victim" in p or "created" in p for p in outcome.problems)
        unclear = not failed and bool(outcome.problems)
        records.append({"group": group, "case": name, "expected": expected, "happened": outcome.happened,
                        "error": outcome.error, "message": outcome.message.replace(str(tmp), "<tmp>"),
                        "problems": list(outcome.problems),
                        "verdict": "FAIL" if failed else "unclear" if unclear else "ok"})
    return records


# ================================================================ 2. kills survived

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


# ================================================================ 3. concurrent workflows

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
    for path in sorted(package.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
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
        t0 = time.perf_counter()
        bad = run_bad_inputs(root / "bad")
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
    print(f"\n1. Bad inputs ({len(bad)} cases, {t1 - t0:.1f} s)")
    print_table(["#", "group", "case", "expected", "happened", "verdict", "message (first line)"],
                [[n, r["group"], r["case"], r["expected"], r["happened"], r["verdict"], r["message"]]
                 for n, r in enumerate(bad, start=1)])
    blank = [r for r in bad if r["case"].endswith(("text in JSONL", "text in CSV"))]
    blank_alike = (len(blank) == 4 and len({r["error"] for r in blank}) == 1
                   and all("have a blank text" in r["message"] for r in blank))
    print(f"blank and whitespace-only texts in JSONL and CSV give the same kind of error: {blank_alike}")
    for r in bad:
        if r["verdict"] != "ok":
            print(f"  {'!!! FAILURE' if r['verdict'] == 'FAIL' else 'unclear message'}: {r['case']}: "
                  f"{'; '.join(r['problems'])}")

    print(f"\n2. Kills survived ({t2 - t1:.1f} s; tiny PiFi run, {EPOCHS} epochs x {STEPS_PER_EPOCH} steps, "
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
    print(f"\n3. Concurrent workflows ({t3 - t2:.1f} s)")
    print_table(["workflows", "jobs", "pool", "slot collisions", "peak running", "jobs per slot", "wall s"],
                [[c["workflows"], f"{c['jobs']}/{c['jobs_expected']}", c["pool"], c["slot_collisions"],
                  c["peak_concurrency"], " ".join(f"{k}:{v}" for k, v in c["jobs_per_slot"].items()),
                  c["wall_seconds"]]])
    print(f"both workflows ran side by side: {c['workflows_overlapped']}; snakemake exit codes {c['returncodes']}")

    library_changed = library_digest() != digest_before
    if library_changed:
        print("\n!!! src/pifi changed while this ran: the kill runs used a snapshot taken at their start, but the "
              "bad-input and workflow checks used the live code; run it again on a quiet tree")
    failures = [f"bad input accepted or mishandled: {r['case']}" for r in bad if r["verdict"] == "FAIL"]
    failures += [f"kill not survived identically: {k['case']}"
                 + (" (not comparable: src/pifi changed during the run)" if k["mixed_library_versions"] else "")
                 for k in kills if not k["identical"]]
    if c["slot_collisions"] or c["jobs"] != c["jobs_expected"] or any(c["returncodes"]) \
            or c["jobs_without_exactly_one_slot"] or c["cuda_visible_devices_wrong"]:
        failures.append(f"concurrent workflows: {c['slot_collisions']} collisions, {c['jobs']}/{c['jobs_expected']} "
                        f"jobs, exit codes {c['returncodes']}")
    handled = sum(r["happened"] == r["expected"] for r in bad)
    accepted = sum(r["happened"] == "accepted!" for r in bad)
    unclear = sum(r["verdict"] == "unclear" for r in bad)
    survived = sum(k["identical"] for k in kills)
    kill_events = sum(len(k["kills"]) for k in kills if k["killed_by_sigkill"] and k["finished"])
    others = {kind: sum(r["happened"] == r["expected"] == kind for r in bad) for kind in ("dropped", "shown", "safe")}
    said = {"dropped": "dropped and counted as asked", "shown": "shown to the user", "safe": "safe"}
    incl = ", ".join(f"{n} {said[kind]}" for kind, n in others.items() if n)
    summary = (f"{len(bad)} bad inputs: {handled} handled as expected (refused with a message"
               f"{f'; incl. {incl}' if incl else ''})"
               f"{f' ({unclear} of them unclear)' if unclear else ''}, {accepted} accepted; "
               f"{kill_events} kills survived ({len(kills)} cases), "
               f"{'results identical' if survived == len(kills) else f'results identical in {survived} cases only'}; "
               f"{c['jobs']} concurrent jobs, {c['slot_collisions']} slot collisions")
    print(f"\n{summary}")
    write_json(args.out, {"benchmark": "reliability", "machine": machine_info(torch.device("cpu")),
                          "settings": {"kill_run": {"epochs": EPOCHS, "batch": BATCH, "rows": ROWS,
                                                    "max_length": MAX_LENGTH, "llm_layer": LLM_LAYER,
                                                    "slm": "BERT 2 layers hidden 32",
                                                    "llm": "Llama 3 layers hidden 48"},
                                       "jobs_per_workflow": args.jobs_per_workflow},
                          "seconds": {"bad_inputs": round(t1 - t0, 1), "kills": round(t2 - t1, 1),
                                      "concurrent": round(t3 - t2, 1)},
                          "library_digest": digest_before, "library_changed_during_run": library_changed,
                          "summary": summary, "failures": failures, "bad_inputs": bad,
                          "blank_texts_same_error": blank_alike, "kills": kills, "kill_reference": reference,
                          "concurrent_workflows": concurrency})
    print(f"wrote {args.out}")
    if failures:
        print("\n!!! RELIABILITY FAILURES:\n  " + "\n  ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
