"""Artifacts that are written atomically, prove they are intact, and are byte-identical across runs.

Every artifact is written to a temporary path in the destination directory and renamed into
place; rename is atomic on POSIX within one filesystem, so a killed job never leaves a file
that looks complete.

Every artifact kind carries a SHA-256 of its *content* under the key ``pifi_sha256``, and every
reader here recomputes it, so truncation and same-size corruption are caught where a file is read
(a changed byte in a parquet file once moved a reported gain from +10.4 to +30.2 points silently):

- safetensors: in the header metadata; the SHA-256 of the line ``json(sorted other metadata
  items)``, then, for each tensor in name order, the line ``json([name, dtype, shape, nbytes])``
  followed by the tensor's raw bytes (lines are compact UTF-8 JSON ending in ``\\n``). The header
  is rewritten with sorted metadata keys because safetensors writes them in hash-map order, which
  differs from process to process.
- JSON (``write_json``/``read_json``; the top level is an object): the last key of that object; the
  SHA-256 of the object without it, as compact JSON (``separators=(",", ":")``, non-ASCII as is).
  Content, not bytes, so a change that leaves the parsed object as it was (e.g. ``\\u00ef`` written
  ``\\u00eF``) is harmless and everything else is refused.
- parquet (``write_parquet``/``read_parquet``): in the file's key-value metadata; the SHA-256 of the
  other key-value metadata (pandas' schema among them), then per column its name, Arrow type,
  nullability, length and null count, then its values (raw bytes for null-free numbers and booleans,
  a compact JSON list otherwise). Parquet has no checksum of its own by default.

A damaged file raises ``ArtifactError``: one line naming the file, saying it changed since it was
written, and how to rebuild it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import numpy as np
import pandas as pd
import safetensors.numpy
from safetensors import SafetensorError

if TYPE_CHECKING:
    import torch

# torch is imported where tensors are written or read as torch, not here: jobs that only handle
# JSON, parquet or numpy (evaluation, summary, figures) then start without it (seconds per job).

CHECKSUM_KEY = "pifi_sha256"
_LENGTH_BYTES = 8  # a safetensors file starts with its header's length, u64 little-endian
_MAX_HEADER_BYTES = 100_000_000  # the limit safetensors itself enforces
_READ_CHUNK_BYTES = 1 << 24


class ArtifactError(ValueError):
    """An artifact on disk that is damaged, incomplete or from an older version of the pipeline.

    ``problem`` is what was found, without the advice to delete the file (a caller that ignores the
    file, like resuming from an epoch checkpoint, says what it does instead).
    """

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem if problem is not None else message


# --- atomic writes -------------------------------------------------------------------------------------

@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600), and some writers recreate it: give the
        # finished file the permissions open() would have, then move it into place.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path``, on failure it is removed.

    The finished tree gets the permissions mkdir() and open() would give (0777/0666 less the umask),
    not mkdtemp's private 0700.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        _set_default_permissions(tmp)
        _replace_dir(tmp, path)
    finally:
        # Best effort: the block's own exception (if any) is the one worth reporting.
        shutil.rmtree(tmp, ignore_errors=True)


def _set_default_permissions(root: Path) -> None:
    mask = _umask()
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o777 & ~mask)
        for name in files:
            file = Path(directory, name)
            if not file.is_symlink():
                os.chmod(file, 0o666 & ~mask)


def _replace_dir(new: Path, path: Path) -> None:
    """Move ``new`` onto ``path``. An old directory is moved aside first (rename cannot replace a full one)."""
    if path.is_symlink() or path.is_file():
        path.unlink()  # never follow a link out of the output directory
    if not path.exists():
        new.rename(path)
        return
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
    path.rename(old / path.name)
    new.rename(path)
    shutil.rmtree(old)


def _read_umask() -> int:
    """The process's umask. Reading it means setting it, so this runs once, at import, before any
    thread of ours writes: toggling it later would widen a file another thread creates meanwhile."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


# --- JSON, parquet, text -------------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | os.PathLike, obj: Mapping[str, Any]) -> None:
    """Write ``obj`` as indented JSON with its checksum as the last key; the same object gives the
    same bytes (keys keep their order)."""
    if not isinstance(obj, Mapping):
        raise TypeError(f"write_json({str(path)!r}): expected a mapping (the checksum is one of its keys), "
                        f"got {type(obj).__name__}")
    if CHECKSUM_KEY in obj:
        raise ValueError(f"write_json({str(path)!r}): key {CHECKSUM_KEY!r} is reserved for the checksum")
    # The checksum covers what a reader will parse (int keys become strings, tuples lists, numpy
    # scalars numbers), so it is taken from the text as written, parsed back.
    parsed = json.loads(json.dumps(obj, default=_json_default))
    parsed[CHECKSUM_KEY] = _json_checksum(parsed)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(parsed, indent=2) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read and verify a file from ``write_json``; return its object without the checksum.

    Raises ``ArtifactError`` naming the file if it is not valid JSON, has no checksum, or its
    content differs from what was written.
    """
    raw = Path(path).read_bytes()  # a missing file stays a FileNotFoundError
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise _damaged(path, f"it is not valid JSON ({error})") from error
    if not isinstance(parsed, dict):
        raise _damaged(path, f"it holds a JSON {type(parsed).__name__}, not the object write_json writes")
    expected = parsed.pop(CHECKSUM_KEY, None)
    if expected is None:
        raise _damaged(path, _NO_CHECKSUM)
    if expected != _json_checksum(parsed):
        raise _damaged(path, _CHANGED)
    return parsed


def _json_checksum(parsed: Mapping[str, Any]) -> str:
    """SHA-256 of the object (without its checksum key) as compact JSON: its content, not its bytes."""
    content = {key: value for key, value in parsed.items() if key != CHECKSUM_KEY}
    text = json.dumps(content, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def write_parquet(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write ``frame`` as parquet, without its index, with its content checksum in the file's metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    if CHECKSUM_KEY.encode() in metadata:
        raise ValueError(f"write_parquet({str(path)!r}): metadata key {CHECKSUM_KEY!r} is reserved")
    metadata[CHECKSUM_KEY.encode()] = _table_checksum(table, metadata).encode()
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)


def read_parquet(path: str | os.PathLike, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Read and verify a file from ``write_parquet`` (all of it: the checksum covers every column);
    return the frame, or only ``columns``.

    Raises ``ArtifactError`` naming the file if it cannot be read, has no checksum, or its content
    differs from what was written.
    """
    table = _verified_table(Path(path))
    try:
        frame = table.to_pandas()
    except Exception as error:  # noqa: BLE001 - verified content that pandas cannot rebuild is still a bad file
        raise _damaged(path, f"pandas cannot rebuild its frame ({type(error).__name__}: {error})") from error
    if columns is not None:
        columns = list(columns)
        unknown = [c for c in columns if c not in frame.columns]
        if unknown:
            raise KeyError(f"{path}: no column(s) {unknown}; it has {list(frame.columns)}")
        frame = frame[columns]
    return frame


def _verified_table(path: Path) -> Any:
    import pyarrow.parquet as pq

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        table = pq.read_table(path)
        metadata = dict(table.schema.metadata or {})
        expected = metadata.pop(CHECKSUM_KEY.encode(), None)
        actual = _table_checksum(table, metadata) if expected is not None else None
    except Exception as error:  # noqa: BLE001 - pyarrow raises many types (OSError, ArrowInvalid, ...) on damage
        message = " ".join(str(error).split())[:300]
        raise _damaged(path, f"it cannot be read as parquet ({type(error).__name__}: {message})") from error
    if expected is None:
        raise _damaged(path, _NO_CHECKSUM)
    if expected.decode("utf-8", "replace") != actual:
        raise _damaged(path, _CHANGED)
    return table


def _table_checksum(table: Any, metadata: Mapping[bytes, bytes]) -> str:
    """SHA-256 of an Arrow table's content: metadata, then per column its description and values.

    Independent of how the table is chunked (a table read back has other chunks than the one written).
    """
    import pyarrow as pa

    digest = hashlib.sha256()
    digest.update(_canonical_line(sorted([key.hex(), value.hex()] for key, value in metadata.items())))
    for field, column in zip(table.schema, table.columns):
        digest.update(_canonical_line([field.name, str(field.type), field.nullable, len(column), column.null_count]))
        values = column.combine_chunks()
        kind = field.type
        if column.null_count == 0 and (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                                       or pa.types.is_boolean(kind)):
            digest.update(np.ascontiguousarray(values.to_numpy(zero_copy_only=False)).tobytes())
        else:
            digest.update(json.dumps(values.to_pylist(), separators=(",", ":"), ensure_ascii=False,
                                     default=_content_default).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def _content_default(value: Any) -> Any:
    """Values JSON has no type for (bytes, dates, decimals): an exact, typed text form."""
    if isinstance(value, bytes):
        return ["bytes", value.hex()]
    return [type(value).__name__, repr(value)]


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8 (not the locale's encoding, so every machine writes the same bytes)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# --- safetensors ---------------------------------------------------------------------------------------

def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` and string ``metadata`` with a checksum, byte-identically for identical inputs."""
    from safetensors.torch import save

    metadata = _checked_metadata(metadata or {})
    # safetensors refuses views that share storage; contiguous copies are cheap at our sizes.
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    blob = memoryview(save(tensors, metadata))
    header_length = struct.unpack("<Q", blob[:_LENGTH_BYTES])[0]
    header = json.loads(bytes(blob[_LENGTH_BYTES:_LENGTH_BYTES + header_length]))
    data = blob[_LENGTH_BYTES + header_length:]
    entries = _tensor_entries(header)
    metadata[CHECKSUM_KEY] = _checksum(metadata, entries, lambda begin, end: [data[begin:end]])
    # Offsets count from the start of the data section, so a header of another length stays valid.
    canonical = _encode_header({"__metadata__": dict(sorted(metadata.items())), **entries})
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(struct.pack("<Q", len(canonical)))
        out.write(canonical)
        out.write(data)


def read_safetensors(
    path: str | os.PathLike, *, framework: Literal["pt", "np"] = "pt"
) -> tuple[dict[str, Any], dict[str, str]]:
    """Verify and read a file from ``write_safetensors``: (tensors or numpy arrays, metadata without checksum).

    Raises ``ArtifactError`` naming the file if it is truncated, corrupted or has no checksum.
    """
    if framework not in ("pt", "np"):
        raise ValueError(f"read_safetensors({str(path)!r}): framework must be 'pt' or 'np', not {framework!r}")
    if framework == "pt":
        from safetensors.torch import load_file
    else:
        load_file = safetensors.numpy.load_file
    metadata = _verified_metadata(Path(path))
    try:
        tensors = load_file(str(path))
    except SafetensorError as error:  # e.g. the file changed after it was verified
        raise _damaged(path, f"safetensors cannot load it ({error})") from error
    return tensors, metadata


def verify_safetensors(path: str | os.PathLike) -> None:
    """Check a file from ``write_safetensors`` in one pass over its bytes (no tensors built).

    Raises ``ArtifactError`` naming the file if it is truncated, corrupted or has no checksum.
    """
    _verified_metadata(Path(path))


def _checked_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    if CHECKSUM_KEY in metadata:
        raise ValueError(f"metadata key {CHECKSUM_KEY!r} is reserved for the checksum that write_safetensors adds")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"safetensors metadata must map str to str; {key!r}: {value!r} is "
                            f"{type(key).__name__} -> {type(value).__name__} (convert it with str() or json.dumps)")
    return dict(metadata)


def _encode_header(header: Mapping[str, Any]) -> bytes:
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    # Pad with spaces (valid JSON whitespace) so the data section starts 8-byte aligned, as safetensors does.
    return text + b" " * (-len(text) % 8)


def _tensor_entries(header: Mapping[str, Any]) -> dict[str, Any]:
    return {name: entry for name, entry in header.items() if name != "__metadata__"}


def _checksum(
    metadata: Mapping[str, str],
    entries: Mapping[str, Any],
    read_range: Callable[[int, int], Iterable[bytes | memoryview]],
) -> str:
    """SHA-256 over the metadata line, then each tensor (in name order): its description line and data bytes."""
    digest = hashlib.sha256()
    digest.update(_canonical_line(sorted(metadata.items())))
    for name in sorted(entries):
        entry = entries[name]
        begin, end = entry["data_offsets"]
        description = [name, entry["dtype"], entry["shape"], end - begin]
        digest.update(_canonical_line(description))
        for chunk in read_range(begin, end):
            digest.update(chunk)
    return digest.hexdigest()


def _canonical_line(value: Any) -> bytes:
    # JSON escapes newlines inside strings, so the lines cannot run into each other.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


_CHANGED = ("its checksum does not match its contents (the file was changed or corrupted after it was "
            "written)")


_NO_CHECKSUM = (f"its checksum key {CHECKSUM_KEY!r} is missing or damaged (the file was changed after it was "
                "written, or not written by pifi)")


def _damaged(path: str | os.PathLike, problem: str) -> ArtifactError:
    return ArtifactError(f"{path}: {problem}; delete it and rerun: Snakemake will rebuild it from its inputs",
                         problem=f"{path}: {problem}")


def _verified_metadata(path: Path) -> dict[str, str]:
    """Check header, layout and checksum of ``path``; return its metadata without the checksum."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        header = _read_header(path, handle, size)
        data_start = handle.tell()
        entries = _tensor_entries(header)
        _check_layout(path, entries, size - data_start)
        metadata = dict(header.get("__metadata__") or {})
        expected = metadata.pop(CHECKSUM_KEY, None)
        if expected is None:
            raise _damaged(path, _NO_CHECKSUM)
        actual = _checksum(metadata, entries, lambda begin, end: _read_chunks(handle, data_start + begin, end - begin))
    if actual != expected:
        raise _damaged(path, _CHANGED)
    return metadata


def _read_header(path: Path, handle: BinaryIO, size: int) -> dict[str, Any]:
    if size < _LENGTH_BYTES:
        raise _damaged(path, f"it is {size} bytes, too short for a safetensors file (truncated?)")
    header_length = struct.unpack("<Q", handle.read(_LENGTH_BYTES))[0]
    if header_length > min(size - _LENGTH_BYTES, _MAX_HEADER_BYTES):
        raise _damaged(path, f"its header claims {header_length} bytes but the file has {size} "
                             "(truncated, or not a safetensors file)")
    try:
        header = json.loads(handle.read(header_length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _damaged(path, f"its header is not valid JSON ({error})") from error
    if not isinstance(header, dict):
        raise _damaged(path, "its header is not a safetensors header (expected a JSON object of tensors)")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _damaged(path, "its header's __metadata__ is not a map of strings")
    return header


def _check_layout(path: Path, entries: Mapping[str, Any], data_size: int) -> None:
    """The tensors must tile the data section exactly: no gap, no overlap, nothing missing at the end."""
    position = 0
    for begin, end in sorted(_span(path, name, entry) for name, entry in entries.items()):
        if begin != position:
            raise _damaged(path, f"its tensors do not tile the data section (a gap or overlap at byte {position})")
        position = end
    if position != data_size:
        raise _damaged(path, f"its header describes {position} data bytes but the file holds {data_size} "
                             "(truncated or appended to)")


def _span(path: Path, name: str, entry: Any) -> tuple[int, int]:
    """The (begin, end) data offsets of one well-formed tensor entry."""
    well_formed = (
        isinstance(entry, dict) and isinstance(entry.get("dtype"), str)
        and isinstance(entry.get("shape"), list) and all(isinstance(n, int) and n >= 0 for n in entry["shape"])
        and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
        and all(isinstance(n, int) for n in entry["data_offsets"])
        and 0 <= entry["data_offsets"][0] <= entry["data_offsets"][1]
    )
    if not well_formed:
        raise _damaged(path, f"its header entry for tensor {name!r} is malformed: {entry!r}")
    return entry["data_offsets"][0], entry["data_offsets"][1]


def _read_chunks(handle: BinaryIO, start: int, length: int) -> Iterator[bytes]:
    handle.seek(start)
    while length > 0:
        chunk = handle.read(min(length, _READ_CHUNK_BYTES))
        if not chunk:
            raise _damaged(handle.name, "it ended while its tensor data was read (truncated meanwhile?)")
        length -= len(chunk)
        yield chunk
