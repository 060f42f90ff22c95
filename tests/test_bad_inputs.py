"""Bad inputs, refused saying what is wrong and where: 51 cases, each built in its own temp dir and handed to
the library function that guards against it (the GPU lock dir, config keys, local datasets, safetensors,
parquet and JSON artifacts, selection limits, model directories, layer indices). Each must be refused by one
of the library's errors whose message names the problem (or, for ``drop_blank_texts``, the row dropped and
counted; for texts shared between splits, a console line; for atomic writes beside another thread under
umask 077, no file wider than 0600). A case that is *accepted* fails.
"""

from __future__ import annotations

import json
import os
import signal
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from pifi.artifacts import ArtifactError, read_json, read_safetensors, write_json, write_parquet, write_safetensors
from pifi.config import ConfigError, check_config_keys, sweep_layer_set
from pifi.data import DatasetError, overlap_line, prepare_dataset, prepare_splits
from pifi.gpu import UnsafeLockError, claim_gpus, release_gpus
from pifi.model_sources import ModelRef, ModelSourceError, resolve_model_dir
from pifi.selection_checks import check_data_limits, check_llm_limits, check_selection_limits
from tiny_project import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
MESSAGE_CHARS = 200
CASE_SECONDS = 20  # a bad input must be refused, not hang (e.g. a FIFO as a lock file)
# The library's own errors: a refusal by anything else (KeyError, TypeError, ...) is not a message for users.
LIBRARY_ERRORS = (DatasetError, ConfigError, ArtifactError, ModelSourceError, UnsafeLockError)

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


@pytest.mark.parametrize("expected, build", [(expected, build) for _, _, expected, build in BAD_INPUTS],
                         ids=[f"{group}: {name}" for group, name, _, _ in BAD_INPUTS])
def test_a_bad_input_is_refused_saying_what_is_wrong(expected, build, tmp_path):
    outcome = build(tmp_path)
    assert outcome.happened == expected, outcome
    assert not outcome.problems, outcome


def test_blank_and_whitespace_only_texts_in_jsonl_and_csv_give_the_same_error(tmp_path):
    blank = [(name, build) for _, name, _, build in BAD_INPUTS if name.endswith(("text in JSONL", "text in CSV"))]
    assert len(blank) == 4
    outcomes = [build(tmp_path / f"case{n}") for n, (_, build) in enumerate(blank)]
    assert len({o.error for o in outcomes}) == 1
    assert all("have a blank text" in o.message for o in outcomes)
