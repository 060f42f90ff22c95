"""Artifacts: checksummed, byte-deterministic safetensors and atomic files and directories."""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch

from pifi.artifacts import (
    CHECKSUM_KEY,
    ArtifactError,
    atomic_dir,
    read_json,
    read_parquet,
    read_safetensors,
    verify_safetensors,
    write_json,
    write_parquet,
    write_safetensors,
)

REBUILD_HINT = "delete it and rerun"


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "states": torch.randn(3, 5, 7, generator=generator),
        "labels": torch.tensor([0, 1, 1, 0, 2]),
        "empty": torch.zeros(0, 4),
        "half": torch.randn(4, generator=generator).to(torch.bfloat16),
    }


def _written(tmp_path: Path, name: str = "states.safetensors") -> Path:
    path = tmp_path / name
    write_safetensors(path, _tensors(), {"num_layers": "3", "model": "tiny_llama"})
    return path


def _damage_message(path: Path) -> str:
    """Assert both readers refuse ``path`` with the same one-line message; return it."""
    with pytest.raises(ArtifactError) as verified:
        verify_safetensors(path)
    with pytest.raises(ArtifactError) as read:
        read_safetensors(path)
    message = str(read.value)
    assert str(verified.value) == message
    assert message.startswith(f"{path}: ") and REBUILD_HINT in message and "\n" not in message
    return message


# --- round trip ---------------------------------------------------------------------------------------

def test_round_trip_with_torch_returns_tensors_and_metadata(tmp_path):
    path = _written(tmp_path)
    tensors, metadata = read_safetensors(path)
    assert metadata == {"num_layers": "3", "model": "tiny_llama"}  # the checksum is not handed back
    assert tensors.keys() == _tensors().keys()
    for name, expected in _tensors().items():
        assert tensors[name].dtype == expected.dtype and torch.equal(tensors[name], expected)


def test_round_trip_with_numpy_returns_arrays(tmp_path):
    path = tmp_path / "pcas.safetensors"
    write_safetensors(path, {"scores": torch.arange(12, dtype=torch.float64).reshape(3, 4)}, {"n": "3"})
    arrays, metadata = read_safetensors(path, framework="np")
    assert metadata == {"n": "3"}
    assert isinstance(arrays["scores"], np.ndarray) and arrays["scores"].dtype == np.float64
    np.testing.assert_array_equal(arrays["scores"], np.arange(12.0).reshape(3, 4))


def test_plain_safetensors_loads_the_file_and_sees_the_checksum(tmp_path):
    path = _written(tmp_path)
    loaded = safetensors.torch.load_file(str(path))
    assert all(torch.equal(loaded[name], tensor) for name, tensor in _tensors().items())
    with safetensors.safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["num_layers"] == "3" and len(metadata[CHECKSUM_KEY]) == 64


def test_views_and_non_contiguous_tensors_are_written(tmp_path):
    base = torch.arange(24.0).reshape(4, 6)
    write_safetensors(tmp_path / "views.safetensors", {"t": base.T, "row": base[1]})
    tensors, metadata = read_safetensors(tmp_path / "views.safetensors")
    assert torch.equal(tensors["t"], base.T) and torch.equal(tensors["row"], base[1]) and metadata == {}


def test_header_is_canonical_sorted_compact_and_aligned(tmp_path):
    path = tmp_path / "x.safetensors"
    write_safetensors(path, {"a": torch.ones(2)}, {"zeta": "1", "alpha": "2", "mid": "é"})
    raw = path.read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    assert (8 + length) % 8 == 0
    header = json.loads(raw[8:8 + length])
    assert list(header["__metadata__"]) == ["alpha", "mid", CHECKSUM_KEY, "zeta"]
    text = raw[8:8 + length].rstrip(b" ")
    assert b" " not in text and "é".encode() in text  # compact separators, raw UTF-8


def test_bad_metadata_is_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match="'num_layers': 3 is str -> int"):
        write_safetensors(tmp_path / "x.safetensors", {"a": torch.ones(1)}, {"num_layers": 3})
    with pytest.raises(ValueError, match=f"{CHECKSUM_KEY!r} is reserved"):
        write_safetensors(tmp_path / "x.safetensors", {"a": torch.ones(1)}, {CHECKSUM_KEY: "0"})
    assert not list(tmp_path.iterdir())


def test_unknown_framework_is_named(tmp_path):
    with pytest.raises(ValueError, match="framework must be 'pt' or 'np', not 'jax'"):
        read_safetensors(_written(tmp_path), framework="jax")


# --- byte determinism ---------------------------------------------------------------------------------

WRITER = """
import sys, torch
from pifi.artifacts import write_safetensors
keys = sys.argv[2].split(",")
values = {"num_layers": "3", "model": "tiny", "dataset": "sst2", "n_samples": "400", "seed": "0"}
generator = torch.Generator().manual_seed(7)
tensors = {"states": torch.randn(2, 3, 4, generator=generator), "labels": torch.tensor([1, 0, 1])}
write_safetensors(sys.argv[1], tensors, {key: values[key] for key in keys})
"""


def test_two_processes_write_identical_bytes_whatever_the_metadata_order(tmp_path):
    orders = ["num_layers,model,dataset,n_samples,seed", "seed,n_samples,dataset,model,num_layers"]
    paths = [tmp_path / f"run{i}.safetensors" for i in range(2)]
    for path, order in zip(paths, orders):
        # A fresh process each: safetensors' hash-map order changes with the process's random seed.
        subprocess.run([sys.executable, "-c", WRITER, str(path), order], check=True)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert read_safetensors(paths[0])[1]["n_samples"] == "400"


def test_write_json_is_byte_deterministic_and_keeps_key_order(tmp_path):
    report = {"task": "classification", "effects": [np.float32(0.25), 0.5], "best_llm_layer": np.int64(1),
              "path": Path("a/b"), "note": "naïve"}
    write_json(tmp_path / "a.json", report)
    write_json(tmp_path / "b.json", dict(report))
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert list(read_json(tmp_path / "a.json")) == ["task", "effects", "best_llm_layer", "path", "note"]
    assert (tmp_path / "a.json").read_text(encoding="utf-8").startswith('{\n  "task"')


# --- damage is caught and named -----------------------------------------------------------------------

def test_truncated_file_is_refused_with_its_name(tmp_path):
    path = _written(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    assert "truncated" in _damage_message(path)
    path.write_bytes(raw[:5])
    assert "too short" in _damage_message(path)
    path.write_bytes(raw[:40])  # cut inside the header
    _damage_message(path)


def test_same_size_corruption_with_the_old_mtime_is_refused(tmp_path):
    path = _written(tmp_path)
    raw = bytearray(path.read_bytes())
    before = os.stat(path)
    data_start = 8 + struct.unpack("<Q", raw[:8])[0]
    data_size = len(raw) - data_start
    quarter = data_size // 4
    raw[data_start + quarter: data_start + 2 * quarter] = bytes(quarter)  # zero 25% of the data bytes
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert "checksum does not match" in _damage_message(path)


def test_a_changed_metadata_value_is_refused(tmp_path):
    path = _written(tmp_path)
    raw = path.read_bytes()
    tampered = raw.replace(b'"num_layers":"3"', b'"num_layers":"2"')
    assert tampered != raw and len(tampered) == len(raw)
    path.write_bytes(tampered)
    assert "checksum does not match" in _damage_message(path)


def test_file_without_checksum_is_refused(tmp_path):
    path = tmp_path / "old.safetensors"
    safetensors.torch.save_file(_tensors(), str(path), metadata={"num_layers": "3"})
    assert f"checksum key {CHECKSUM_KEY!r} is missing or damaged" in _damage_message(path)


def test_garbage_header_is_refused(tmp_path):
    path = tmp_path / "garbage.safetensors"
    header = b"{not json}      "
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    assert "not valid JSON" in _damage_message(path)
    path.write_bytes(b"\xff" * 64)
    assert "header claims" in _damage_message(path)


def test_malformed_tensor_entry_is_refused(tmp_path):
    path = tmp_path / "bad.safetensors"
    header = json.dumps({"__metadata__": {CHECKSUM_KEY: "0"}, "x": {"dtype": "F32", "shape": [1],
                                                                     "data_offsets": [0, "4"]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    assert "header entry for tensor 'x' is malformed" in _damage_message(path)


def test_verify_accepts_what_read_accepts(tmp_path):
    path = _written(tmp_path)
    assert verify_safetensors(path) is None
    assert read_safetensors(path)[1]["model"] == "tiny_llama"


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        verify_safetensors(tmp_path / "nope.safetensors")


# --- JSON and parquet carry a checksum of their content too ---------------------------------------------

def _report() -> dict:
    return {"dataset": "topics", "layer": 3, "choices": {"fisher": {"layer": 3, "margin": 0.125, "win_rate": None}},
            "effects": [0.1, -2.5e-07, 1e300], "converged": True, "note": "naïve ✓"}


def _predictions(rows: int = 40, classes: int = 3) -> pd.DataFrame:
    """The shape of a run's predictions.parquet (pifi.evaluation.predictions_frame)."""
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(classes), rows).astype(np.float32)
    frame = pd.DataFrame({"row_id": [f"test-{i:06d}" for i in range(rows)], "label": rng.integers(0, classes, rows),
                          "prediction": probabilities.argmax(axis=1)})
    for k in range(classes):
        frame[f"prob_{k}"] = probabilities[:, k]
    return frame


def _refusal(path: Path, read) -> str:
    with pytest.raises(ArtifactError) as error:
        read(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and REBUILD_HINT in message and "\n" not in message
    return message


def test_json_round_trip_hides_the_checksum_and_keeps_the_format(tmp_path):
    path = tmp_path / "selection.json"
    write_json(path, _report())
    assert read_json(path) == _report()
    text = path.read_text(encoding="utf-8")
    assert text.startswith('{\n  "dataset": "topics"') and f'"{CHECKSUM_KEY}": "' in text.splitlines()[-2]
    assert json.loads(text)["layer"] == 3  # still plain JSON for other tools


def test_json_checksum_covers_content_not_layout(tmp_path):
    """Re-indenting changes no value: accepted. Any changed value, key or checksum: refused."""
    path = tmp_path / "metrics.json"
    write_json(path, {"accuracy": 0.875, "seed": 1, "layer": None})
    stored = json.loads(path.read_text())
    path.write_text(json.dumps(stored, separators=(",", ":")))
    assert read_json(path) == {"accuracy": 0.875, "seed": 1, "layer": None}
    for changed in ({**stored, "accuracy": 0.975}, {**stored, "layer": 0}, {**stored, "extra": 1},
                    {k: v for k, v in stored.items() if k != "seed"}, {**stored, CHECKSUM_KEY: "0" * 64}):
        path.write_text(json.dumps(changed, indent=2))
        assert "checksum does not match" in _refusal(path, read_json)


def test_json_without_checksum_or_not_json_is_refused_with_its_name(tmp_path):
    path = tmp_path / "effects.json"
    path.write_text('{"effects": [0.1]}')
    assert f"checksum key {CHECKSUM_KEY!r} is missing or damaged" in _refusal(path, read_json)
    path.write_text('{"effects": [0.1')
    assert "not valid JSON" in _refusal(path, read_json)
    path.write_bytes(b'{"a": "\xff"}')
    assert "not valid JSON" in _refusal(path, read_json)
    path.write_text("[1, 2]")
    assert "not the object write_json writes" in _refusal(path, read_json)
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "nope.json")


def test_write_json_refuses_what_it_could_not_checksum(tmp_path):
    with pytest.raises(TypeError, match="expected a mapping"):
        write_json(tmp_path / "a.json", [1, 2])
    with pytest.raises(ValueError, match="reserved"):
        write_json(tmp_path / "a.json", {CHECKSUM_KEY: "x"})
    assert not list(tmp_path.iterdir())


def test_parquet_round_trip_is_what_pandas_reads(tmp_path):
    path = tmp_path / "predictions.parquet"
    frame = _predictions()
    write_parquet(path, frame)
    pd.testing.assert_frame_equal(read_parquet(path), pd.read_parquet(path))
    pd.testing.assert_frame_equal(read_parquet(path), frame, check_dtype=False)
    pd.testing.assert_frame_equal(read_parquet(path, columns=["row_id", "label"]),
                                  pd.read_parquet(path)[["row_id", "label"]])
    with pytest.raises(KeyError, match="no column"):
        read_parquet(path, columns=["nope"])
    with pytest.raises(FileNotFoundError):
        read_parquet(tmp_path / "nope.parquet")


def test_parquet_with_a_changed_value_or_no_checksum_is_refused(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "predictions.parquet"
    write_parquet(path, _predictions())
    table = pq.read_table(path)  # rewritten with its metadata (and so its checksum) kept, one value changed
    labels = table.column("label").to_numpy().copy()
    labels[7] = (labels[7] + 1) % 3
    pq.write_table(table.set_column(1, "label", [labels]), path)
    assert "checksum does not match" in _refusal(path, read_parquet)
    _predictions().to_parquet(path, index=False)
    assert f"checksum key {CHECKSUM_KEY!r} is missing or damaged" in _refusal(path, read_parquet)
    path.write_bytes(b"PAR1 not parquet PAR1")
    assert "cannot be read as parquet" in _refusal(path, read_parquet)


REPO = Path(__file__).resolve().parents[1]
UNCHECKED_READ = re.compile(r"\b(pd\.read_parquet|pq\.read_table|pd\.read_json|json\.loads?)\(")
# Reads that are not of pifi's artifacts, so have no checksum to check.
NOT_ARTIFACTS = {
    ("src/pifi/data.py", "json.loads"), ("src/pifi/data.py", "pd.read_parquet"),  # the user's dataset files
    ("src/pifi/model_sources.py", "json.loads"), ("src/pifi/plugged_layer.py", "json.loads"),  # a model's own JSON
    ("src/pifi/resume.py", "json.loads"),  # metadata inside a checkpoint read_safetensors verified
}


def test_every_artifact_reader_goes_through_the_verifying_readers():
    """JSON and parquet artifacts are read with read_json / read_parquet (checksum checked), never
    with pandas or json directly, in the library, the scripts and the rules."""
    sources = [*(REPO / "src/pifi").glob("*.py"), *(REPO / "workflow/scripts").glob("*.py"),
               *(REPO / "workflow/rules").glob("*.smk"), REPO / "Snakefile"]
    found = {(str(path.relative_to(REPO)), match.group(1))
             for path in sources if path.name != "artifacts.py"
             for match in UNCHECKED_READ.finditer(path.read_text(encoding="utf-8"))}
    assert found - NOT_ARTIFACTS == set()


# --- single-bit flips: every one is refused by name, or changes nothing -----------------------------------

def _flip_bits(path: Path, read, same, offsets: Iterable[int]) -> Counter:
    """Flip each bit of each byte at ``offsets``: the read must raise ArtifactError naming the file
    (one line), or return content ``same`` as the original's. A silent change of value fails."""
    raw = path.read_bytes()
    reference = read(path)
    outcomes: Counter = Counter()
    for offset in offsets:
        for bit in range(8):
            damaged = bytearray(raw)
            damaged[offset] ^= 1 << bit
            path.write_bytes(bytes(damaged))
            try:
                value = read(path)
            except ArtifactError as error:
                message = str(error)
                assert message.startswith(f"{path}: ") and REBUILD_HINT in message and "\n" not in message
                outcomes["checksum" if "checksum does not match" in message else "unreadable"] += 1
                continue
            assert same(value, reference), f"byte {offset} bit {bit} changed {path.name} silently"
            outcomes["harmless"] += 1
    path.write_bytes(raw)
    return outcomes


def test_every_single_bit_flip_of_a_json_artifact_is_caught_or_harmless(tmp_path):
    path = tmp_path / "selection.json"
    write_json(path, _report())
    outcomes = _flip_bits(path, read_json, lambda a, b: json.dumps(a) == json.dumps(b),
                          range(len(path.read_bytes())))
    assert outcomes["checksum"] > 100 and outcomes["harmless"] < 0.01 * sum(outcomes.values())


def test_bit_flips_across_a_predictions_parquet_are_caught_or_harmless(tmp_path):
    """Parquet has no checksum of its own: one flipped byte once moved a reported gain by 20 points."""
    path = tmp_path / "predictions.parquet"
    write_parquet(path, _predictions())
    size = len(path.read_bytes())
    offsets = sorted(set(range(0, size, 37)) | set(range(8)) | set(range(size - 8, size)))  # and magic, footer length

    def same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
        return a.equals(b) and list(a.dtypes) == list(b.dtypes) and list(a.columns) == list(b.columns)

    outcomes = _flip_bits(path, read_parquet, same, offsets)
    assert outcomes["checksum"] > 50 and outcomes["unreadable"] > 50


def test_bit_flips_across_a_safetensors_artifact_are_caught_or_harmless(tmp_path):
    path = _written(tmp_path)

    def same(a, b) -> bool:
        (tensors_a, meta_a), (tensors_b, meta_b) = a, b
        return meta_a == meta_b and tensors_a.keys() == tensors_b.keys() and all(
            tensors_a[k].dtype == tensors_b[k].dtype and torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a)

    outcomes = _flip_bits(path, read_safetensors, same, range(0, len(path.read_bytes()), 7))
    assert outcomes["checksum"] > 50


# --- atomic directories -------------------------------------------------------------------------------

def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_dir_gives_normal_permissions(tmp_path, umask_022):
    target = tmp_path / "out" / "weights"
    with atomic_dir(target) as tmp:
        assert _mode(tmp) == 0o700  # private while being written
        (tmp / "model.safetensors").write_bytes(b"x")
        os.chmod(tmp / "model.safetensors", 0o600)
        (tmp / "sub").mkdir(mode=0o700)
        (tmp / "sub" / "f.json").write_text("{}")
        assert not target.exists()
    assert _mode(target) == 0o755 and _mode(target / "sub") == 0o755
    assert _mode(target / "model.safetensors") == 0o644 and _mode(target / "sub" / "f.json") == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["weights"]  # no temporary left behind


def test_atomic_dir_replaces_an_existing_directory(tmp_path):
    target = tmp_path / "weights"
    target.mkdir()
    (target / "stale.bin").write_bytes(b"old")
    with atomic_dir(target) as tmp:
        (tmp / "new.safetensors").write_bytes(b"new")
    assert [p.name for p in target.iterdir()] == ["new.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["weights"]


def test_atomic_dir_failure_keeps_the_old_directory_and_removes_the_temporary(tmp_path):
    target = tmp_path / "weights"
    target.mkdir()
    (target / "old.safetensors").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="conversion failed"):
        with atomic_dir(target) as tmp:
            (tmp / "half.safetensors").write_bytes(b"half")
            raise RuntimeError("conversion failed")
    assert [p.name for p in target.iterdir()] == ["old.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["weights"]


def test_atomic_dir_replaces_a_symlink_without_touching_its_target(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    work = tmp_path / "work"
    work.mkdir()
    (work / "weights").symlink_to(outside, target_is_directory=True)
    with atomic_dir(work / "weights") as tmp:
        (tmp / "model.safetensors").write_bytes(b"x")
    assert not (work / "weights").is_symlink() and (work / "weights" / "model.safetensors").exists()
    assert (outside / "keep.txt").read_text() == "precious"


# --- a checksum key that is missing ---------------------------------------------------------------

def test_a_missing_checksum_key_is_called_missing_or_damaged(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"x": 1})
    path.write_text(path.read_text().replace(CHECKSUM_KEY, CHECKSUM_KEY + "X"))  # one byte of the key's name
    with pytest.raises(ArtifactError) as error:
        read_json(path)
    assert f"its checksum key {CHECKSUM_KEY!r} is missing or damaged" in str(error.value)
    assert "before checksums were added" not in str(error.value)
    assert REBUILD_HINT in str(error.value) and REBUILD_HINT not in error.value.problem


# --- the umask, learned once -------------------------------------------------------------------------

_TWO_THREADS = """
import os, stat, sys, threading
os.umask(0o077)
from pifi.artifacts import write_json
calls = []
real_umask = os.umask
os.umask = lambda mask: calls.append(mask) or real_umask(mask)
out = sys.argv[1]
done = threading.Event()

def writer():
    for i in range(300):
        write_json(os.path.join(out, f"artifact{i}.json"), {"i": i})
    done.set()

thread = threading.Thread(target=writer)
thread.start()
plain = 0
while not done.is_set() or plain < 300:
    with open(os.path.join(out, f"plain{plain}.txt"), "w") as handle:
        handle.write("x")
    plain += 1
thread.join()
modes = {stat.S_IMODE(os.stat(os.path.join(out, name)).st_mode) for name in os.listdir(out)}
print(sorted(modes), len(calls))
"""


def test_no_file_gets_a_wider_mode_than_the_umask_while_another_thread_writes(tmp_path):
    """Atomic writes on a background thread (epoch checkpoints) never touch the process's umask:
    the main thread's files keep 0600 under umask 077, and so do the artifacts."""
    result = subprocess.run([sys.executable, "-c", _TWO_THREADS, str(tmp_path)], capture_output=True, text=True,
                            check=True)
    modes, umask_calls = result.stdout.split("] ")
    assert modes == "[384"  # 0o600 and nothing else
    assert int(umask_calls) == 0
