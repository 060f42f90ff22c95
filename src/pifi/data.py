"""Datasets: load a labelled classification dataset from the hub, a local directory or the demo
generator, validate it, and give every row a stable id.

A prepared split is a frame with ``row_id``, ``text``, optionally ``text_pair``, and ``label``
(integers 0..C-1). Row ids name the source split and position (``train-000042``), so a
validation split carved from train still says where its rows came from.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from pifi.artifacts import read_parquet
from pifi.demo_data import demo_splits

SPLITS = ("train", "validation", "test")
LOCAL_FORMATS = ("jsonl", "csv", "parquet")
SHOWN_ROWS = 5  # how many offending rows an error message lists
# data.split_overlap: what a test text also found in train or validation does (leakage)
SPLIT_OVERLAP_MODES = ("warn", "error", "drop_test")
# The data.* settings that change which rows a dataset has: a dataset's entry may set its own
# (datasets.<name>.<key>), so a fix for one dataset re-prepares that dataset alone.
PER_DATASET_SETTINGS = ("validation_fraction", "drop_blank_texts", "split_overlap")
_WHOLE_NUMBER_TEXT = re.compile(r"[+-]?\d+(?:\.0*)?")  # "1", "-2", "1.0", "3." (as in CSV or quoted JSON)
UTF8_BOM = b"\xef\xbb\xbf"

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset that cannot be used as configured; the message says what and where."""


def dataset_settings(data: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """The data settings one dataset is prepared with: ``data.*``, with the dataset entry's own keys over it."""
    return {**data, **{key: spec[key] for key in PER_DATASET_SETTINGS if key in spec}}


def _fix(name: str, key: str, value: Any) -> str:
    """A suggested setting, for this dataset alone (datasets.<name>.<key>: value)."""
    return f"datasets.{name}.{key}: {value}"


# --- reading local files ------------------------------------------------------------------------------
# A reader returns a frame whose attrs["line_numbers"] (when the format has lines) holds each row's
# 1-based line in the file, so later checks can point at the line to fix.

def _read_utf8(path: Path) -> str:
    """The file's text; a byte that is not UTF-8 is an error naming its line."""
    data = path.read_bytes()
    body = data[len(UTF8_BOM):] if data.startswith(UTF8_BOM) else data
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        line = body.count(b"\n", 0, error.start) + 1
        raise DatasetError(
            f"{path}:{line}: byte {body[error.start:error.start + 1]!r} is not valid UTF-8 ({error.reason}); "
            "the file must be UTF-8: re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from error


def _integral_floats_to_int(frame: pd.DataFrame) -> pd.DataFrame:
    """Float columns holding only whole numbers (JSON ``1.0``) become int64, as pd.read_json did."""
    for column in frame.columns[[pd.api.types.is_float_dtype(dtype) for dtype in frame.dtypes]]:
        values = frame[column]
        if values.notna().all() and (values == values.round()).all() and (values.abs() < 2**63).all():
            frame[column] = values.astype("int64")
    return frame


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line; errors name the file and the line."""
    records, line_numbers = [], []
    # split on "\n" only: str.splitlines would also split on U+2028, which JSON strings may hold raw
    for line_number, line in enumerate(_read_utf8(path).split("\n"), start=1):
        if not line.strip():
            continue  # empty lines (a trailing newline, a blank separator) carry no record
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(
                f"{path}:{line_number}: invalid JSON at column {error.colno}: {error.msg}; "
                "each line must be one JSON object"
            ) from error
        if not isinstance(record, dict):
            raise DatasetError(
                f"{path}:{line_number}: expected a JSON object per line, got {type(record).__name__} "
                f"{line.strip()[:40]!r}"
            )
        records.append(record)
        line_numbers.append(line_number)
    frame = _integral_floats_to_int(pd.DataFrame(records))
    frame.attrs["line_numbers"] = np.asarray(line_numbers, dtype=np.int64)
    return frame


def _csv_record_lines(text: str, expected_rows: int) -> np.ndarray | None:
    """The 1-based line each CSV record starts on (quoted fields may span lines), or None if the
    stdlib parser disagrees with pandas on the number of rows."""
    reader = csv.reader(io.StringIO(text, newline=""))
    starts, previous_end = [], 0
    for record in reader:
        if record:  # pandas skips blank lines too
            starts.append(previous_end + 1)
        previous_end = reader.line_num
    record_starts = starts[1:]  # the first record is the header
    return np.asarray(record_starts, dtype=np.int64) if len(record_starts) == expected_rows else None


def _read_csv(path: Path) -> pd.DataFrame:
    text = _read_utf8(path)
    try:
        frame = pd.read_csv(io.StringIO(text))
    except pd.errors.EmptyDataError:
        return pd.DataFrame()  # an empty file: "has no rows", as for every format (_standardise)
    except pd.errors.ParserError as error:
        raise DatasetError(f"{path}: cannot parse the CSV: {error}") from error
    line_numbers = _csv_record_lines(text, len(frame))
    if line_numbers is not None:
        frame.attrs["line_numbers"] = line_numbers
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow  # pandas' parquet engine; imported here for its exception type

    try:
        return pd.read_parquet(path)
    except (OSError, pyarrow.ArrowException) as error:
        raise DatasetError(f"{path}: cannot read the parquet file: {error}") from error


def _read_local_file(path: Path) -> pd.DataFrame:
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix == ".csv":
        return _read_csv(path)
    return _read_parquet(path)


def _find_local_split(directory: Path, split: str) -> Path | None:
    found = [directory / f"{split}.{ext}" for ext in LOCAL_FORMATS if (directory / f"{split}.{ext}").exists()]
    if len(found) > 1:
        raise DatasetError(f"{directory}: several files for split {split!r}: {[p.name for p in found]}; keep one")
    return found[0] if found else None


def load_local_splits(directory: str | Path) -> dict[str, pd.DataFrame]:
    """Read ``{train,validation,test}.{jsonl,csv,parquet}`` from a directory; validation may be absent.

    Each frame's attrs hold its ``source`` file and, for jsonl and csv, the ``line_numbers`` of its rows.
    Unreadable files (bad JSON, non-UTF-8 bytes, a ragged CSV, a corrupt parquet) raise DatasetError
    naming the file, and the line where there is one.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"local dataset directory {directory} does not exist")
    splits = {}
    for split in SPLITS:
        path = _find_local_split(directory, split)
        if path is None:
            if split != "validation":
                raise DatasetError(
                    f"{directory}: no {split} split (expected {split}.jsonl, {split}.csv or {split}.parquet)"
                )
            continue
        frame = _read_local_file(path)
        frame.attrs["source"] = str(path)
        splits[split] = frame
    return splits


def load_hub_splits(spec: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """Load the splits named in ``spec['splits']`` from the Hugging Face hub (or its local cache)."""
    import datasets  # heavy import, only needed for hub datasets

    splits = {}
    for split, source_split in spec["splits"].items():
        if source_split is None:
            continue
        try:
            loaded = datasets.load_dataset(spec["name"], spec.get("config"), split=source_split)
        except Exception as error:  # the hub raises many types; name the dataset and re-raise
            raise DatasetError(
                f"could not load {spec['name']!r} (config {spec.get('config')!r}, split {source_split!r}) "
                f"from the hub: {error}. Offline? Point the dataset at a local directory instead."
            ) from error
        frame = loaded.to_pandas()
        frame.attrs["source"] = f"hub:{spec['name']}/{spec.get('config') or ''}:{source_split}"
        frame.attrs["source_split"] = source_split
        splits[split] = frame
    return splits


def _describe_rows(positions: pd.Index, line_numbers: np.ndarray | None) -> str:
    """The first few offending rows, as file lines when known, else 1-based row positions, and how
    many more there are."""
    shown = positions[:SHOWN_ROWS]
    more = f", ... ({len(positions) - SHOWN_ROWS} more)" if len(positions) > SHOWN_ROWS else ""
    if line_numbers is not None:
        return f"line(s) {', '.join(str(line_numbers[p]) for p in shown)}{more} of the file"
    return f"row(s) {', '.join(str(p + 1) for p in shown)}{more} (1-based positions in the split)"


def _blank_texts(out: pd.DataFrame, sources: Mapping[str, str], where: str,
                 line_numbers: np.ndarray | None) -> dict[str, pd.Series]:
    """Per text column (text, text_pair), which rows are missing, empty or whitespace-only.

    A value that is present but not a string (a number, a list) is an error: it means the wrong
    column was configured, so dropping it would hide the mistake.
    """
    blank = {}
    for column in ("text", "text_pair"):
        if column not in out.columns:
            continue
        values = out[column]
        missing = values.isna()
        is_string = values.map(lambda value: isinstance(value, str)).astype(bool)
        not_text = ~missing & ~is_string
        if not_text.any():
            example = values[not_text].iloc[0]
            raise DatasetError(
                f"{where}: column {sources[column]!r} has {int(not_text.sum())} value(s) that are not text "
                f"(e.g. {example!r}) at {_describe_rows(out.index[not_text], line_numbers)}; "
                "texts must be strings: check text_column/text_pair_column in the dataset's config entry"
            )
        blank[column] = missing | values.where(is_string, "").str.strip().eq("")
    return blank


def _handle_blank_texts(out: pd.DataFrame, sources: Mapping[str, str], where: str,
                        line_numbers: np.ndarray | None, drop: bool, name: str) -> pd.DataFrame:
    """Refuse rows with blank texts, or drop them (and say how many) when ``drop`` is set."""
    blank_by_column = _blank_texts(out, sources, where, line_numbers)
    blank = pd.concat(blank_by_column.values(), axis=1).any(axis=1)
    if not blank.any():
        return out
    count = int(blank.sum())
    if not drop:
        columns = " and ".join(repr(sources[c]) for c, column_blank in blank_by_column.items() if column_blank.any())
        raise DatasetError(
            f"{where}: {count} row(s) have a blank text in column {columns} (missing, empty or whitespace-only) "
            f"at {_describe_rows(out.index[blank], line_numbers)}; fix them, or set "
            f"{_fix(name, 'drop_blank_texts', 'true')} to drop such rows (data.drop_blank_texts: true for every dataset)"
        )
    logger.warning("%s: dropped %d of %d row(s) with a blank text (drop_blank_texts)", where, count, len(out))
    return out[~blank]


def _standardise(frame: pd.DataFrame, split: str, spec: Mapping[str, Any], where: str, *, name: str,
                 drop_blank_texts: bool = False) -> pd.DataFrame:
    """Rename configured columns to text/text_pair/label, attach row ids, map labels, check texts."""
    columns = {spec.get("text_column", "text"): "text", spec.get("label_column", "label"): "label"}
    if spec.get("text_pair_column"):
        columns[spec["text_pair_column"]] = "text_pair"
    elif "text_pair" in frame.columns:
        columns["text_pair"] = "text_pair"
    if len(frame) == 0:  # before the columns: an empty file has none, and "missing column(s)" misleads
        raise DatasetError(f"{where}: has no rows; every split needs labelled rows")
    missing = [source for source in columns if source not in frame.columns]
    if missing:
        raise DatasetError(
            f"{where}: missing column(s) {missing}; found {list(frame.columns)}. "
            "Set text_column/label_column in the dataset's config entry."
        )
    source_split = frame.attrs.get("source_split", split)
    line_numbers = frame.attrs.get("line_numbers")
    # from here on the index is the row's source position, whatever rows are dropped
    out = frame[list(columns)].rename(columns=columns).reset_index(drop=True)
    out.attrs.pop("line_numbers", None)  # describes the file's rows, not the prepared ones
    out.insert(0, "row_id", [f"{source_split}-{i:06d}" for i in range(len(out))])
    label_map = spec.get("label_map")
    if label_map:
        # Keys compared in one canonical form, so 1, 1.0, "1" and "1.0" match the key 1 in every format.
        label_map = {_label_key(k): int(v) for k, v in label_map.items()}
        keys = out["label"].map(_label_key)
        keep = keys.isin(label_map)
        out = out[keep].copy()
        out["label"] = keys[keep].map(label_map).astype("int64")
    # after label_map: rows the config leaves out need no text
    sources = {standard: source for source, standard in columns.items()}
    out = _handle_blank_texts(out, sources, where, line_numbers, drop_blank_texts, name)
    if not label_map:
        out["label"] = _labels_as_classes(out["label"], where, line_numbers)
    return out.reset_index(drop=True)


def _label_key(value: Any) -> str | None:
    """A label's canonical text: whole numbers (1, 1.0, "1", " 1.0") as "1", other values as they are.

    One rule for every format: CSV has only text, JSON has numbers and strings, parquet has types;
    a whole number means that class however it was written. None for a missing label.
    """
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))  # True is an int in Python, but not a class index
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if math.isfinite(value) and float(value).is_integer() else repr(float(value))
    if isinstance(value, str) and _WHOLE_NUMBER_TEXT.fullmatch(value.strip()):
        return str(int(value.strip().split(".")[0]))
    return str(value)


def _labels_as_classes(labels: pd.Series, where: str, line_numbers: np.ndarray | None) -> pd.Series:
    """The labels as int64 class indices; missing or non-whole-number labels are an error naming
    how many rows and which (the first few lines, and a count of the rest)."""
    missing = labels.map(_label_key).isna()
    if missing.any():
        rows = _describe_rows(labels.index[missing], line_numbers)
        raise DatasetError(f"{where}: {int(missing.sum())} row(s) have no label, at {rows}; "
                           "fill them or drop those rows")
    keys = labels.map(_label_key).astype(object)  # object: .str works also when no row is left
    whole = keys.str.fullmatch(r"-?\d+").astype(bool)
    if not whole.all():
        first = labels[~whole].iloc[0]
        rows = _describe_rows(labels.index[~whole], line_numbers)
        raise DatasetError(
            f"{where}: labels must be integers (whole numbers, written 1, 1.0, \"1\" or \"1.0\"); "
            f"{int((~whole).sum())} row(s) are not, e.g. {first!r}, at {rows}; map such labels with label_map"
        )
    return keys.astype("int64")


def carve_validation(train: pd.DataFrame, fraction: float, seed: int, *, name: str = "?",
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a stratified, seeded validation set off the training rows.

    Every class needs a row on each side: checked first, so a rare class is named with its dataset
    and the ways out, instead of scikit-learn's "least populated class" error.
    """
    counts = train["label"].value_counts().sort_index()
    rare = {int(label): int(n) for label, n in counts.items() if n < 2}
    ways_out = ("provide a validation split (validation.jsonl or a hub validation split), or drop or merge "
                "the class with label_map")
    if rare:
        described = ", ".join(f"class {label} has {n} row" for label, n in rare.items())
        raise DatasetError(f"dataset {name!r}: cannot carve a stratified validation split from train: {described} "
                           f"(each class needs at least 2, one for each side); {ways_out}")
    n_validation = math.ceil(fraction * len(train))
    if n_validation < len(counts) or len(train) - n_validation < len(counts):
        raise DatasetError(f"dataset {name!r}: validation_fraction {fraction} of {len(train)} train rows gives "
                           f"{n_validation} validation row(s) for {len(counts)} classes; each side needs one row of "
                           f"every class: raise or lower it (e.g. {_fix(name, 'validation_fraction', 0.3)}), or {ways_out}")
    train_rows, validation_rows = train_test_split(
        train, test_size=fraction, random_state=seed, stratify=train["label"]
    )
    return train_rows.sort_index().reset_index(drop=True), validation_rows.sort_index().reset_index(drop=True)


def check_labels(splits: Mapping[str, pd.DataFrame], name: str) -> int:
    """Check every split has at least two classes and labels are 0..C-1; return C."""
    classes = sorted(int(c) for c in splits["train"]["label"].unique())
    for split, frame in splits.items():
        present = sorted(int(c) for c in frame["label"].unique())
        if len(frame) == 0:
            raise DatasetError(f"dataset {name!r}: split {split!r} has no rows left (after label_map, "
                               "drop_blank_texts or split_overlap: drop_test)")
        if len(present) < 2:
            raise DatasetError(f"dataset {name!r}: split {split!r} has one class only ({present}); "
                               "a classifier cannot be trained or scored on it")
        unseen = set(present) - set(classes)
        if unseen:
            raise DatasetError(f"dataset {name!r}: split {split!r} has labels {sorted(unseen)} not in train")
    if classes != list(range(len(classes))):
        raise DatasetError(f"dataset {name!r}: labels must be 0..C-1, got {classes}; remap them with label_map")
    return len(classes)


def absent_classes(splits: Mapping[str, pd.DataFrame]) -> dict[str, list[int]]:
    """Per split other than train: the train classes it lacks (its per-class metrics are then 0, not skipped)."""
    classes = set(int(c) for c in splits["train"]["label"].unique())
    return {split: sorted(classes - set(int(c) for c in frame["label"].unique()))
            for split, frame in splits.items() if split != "train"}


def _text_keys(frame: pd.DataFrame) -> pd.Series:
    """Each row's text (and text pair) with runs of whitespace made one space and the ends stripped."""
    keys = frame["text"].map(lambda text: " ".join(str(text).split()))
    if "text_pair" in frame.columns:
        keys = keys + "\x00" + frame["text_pair"].map(lambda text: " ".join(str(text).split()))
    return keys


def split_overlap(splits: Mapping[str, pd.DataFrame], name: str, mode: str = "warn",
                  ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Count texts shared between splits (after whitespace normalisation) and act on test leakage.

    A test text also in train or validation makes the test score partly a memory test. ``mode``
    says what such test rows do: ``warn`` (logged, kept), ``error`` (DatasetError naming a few) or
    ``drop_test`` (the test copies are dropped and counted). Texts shared by train and validation
    are counted and logged whatever the mode (a validation split carved from a train file with
    duplicates has them). Returns the splits and a report of row counts for info.json: for each
    pair, the rows of the second split whose text the first also holds.
    """
    if mode not in SPLIT_OVERLAP_MODES:
        raise ValueError(f"split_overlap must be one of {SPLIT_OVERLAP_MODES}, not {mode!r}")
    keys = {split: _text_keys(frame) for split, frame in splits.items()}
    report: dict[str, Any] = {"mode": mode}
    for first, second in (("train", "validation"), ("train", "test"), ("validation", "test")):
        report[f"{first}_{second}"] = int(keys[second].isin(set(keys[first])).sum())
    leaked = keys["test"].isin(set(keys["train"]) | set(keys["validation"]))
    report["test_rows_dropped"] = 0
    out = dict(splits)
    if report["train_validation"]:
        logger.warning("dataset %r: %d validation row(s) share their text with train (after whitespace "
                       "normalisation): early stopping sees some training texts", name, report["train_validation"])
    if leaked.any():
        count, test = int(leaked.sum()), splits["test"]
        examples = ", ".join(f"{row_id} {text[:40]!r}" for row_id, text
                             in zip(test["row_id"][leaked][:3], test["text"][leaked][:3]))
        what = (f"dataset {name!r}: {count} of {len(test)} test row(s) share their text with train or validation "
                f"(after whitespace normalisation), e.g. {examples}")
        if mode == "error":
            raise DatasetError(f"{what}; the test score would partly measure memory: remove them, or set "
                               f"{_fix(name, 'split_overlap', 'drop_test')} (drop the test copies) or warn (keep them)")
        if mode == "drop_test":
            out["test"] = test[~leaked.to_numpy()].reset_index(drop=True)
            report["test_rows_dropped"] = count
            logger.warning("%s; dropped those test rows (split_overlap: drop_test)", what)
        else:
            logger.warning("%s; kept (split_overlap: warn; %s drops them, error stops)", what,
                           _fix(name, "split_overlap", "drop_test"))
    return out, report


def overlap_line(name: str, overlap: Mapping[str, Any], *, test_rows: int) -> str | None:
    """The console line for texts shared between splits (``split_overlap``'s report); None when there are none."""
    parts = [f"{overlap[pair]} {second} row(s) also in {first}" for pair, first, second in
             (("train_test", "train", "test"), ("validation_test", "validation", "test"),
              ("train_validation", "train", "validation")) if overlap[pair]]
    if overlap["test_rows_dropped"]:
        parts.append(f"{overlap['test_rows_dropped']} test row(s) dropped")
    if not parts:
        return None
    fix = "" if overlap["mode"] == "drop_test" else f"; {_fix(name, 'split_overlap', 'drop_test')} drops them"
    return (f"PiFi data {name}: texts shared between splits: {', '.join(parts)} ({test_rows} test rows kept; "
            f"split_overlap: {overlap['mode']}{fix})")


def prepare_dataset(
    name: str, spec: Mapping[str, Any], *, validation_fraction: float = 0.2, seed: int = 0,
    base_dir: str | Path = ".", drop_blank_texts: bool = False, split_overlap_mode: str = "warn",
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """``prepare_splits``, and what the data checks found, for info.json: ``split_overlap`` (row
    counts of texts shared between splits, test rows dropped) and ``absent_classes`` (train classes
    missing from validation or test, each also a logged warning)."""
    splits = _load_and_standardise(name, spec, validation_fraction=validation_fraction, seed=seed,
                                   base_dir=base_dir, drop_blank_texts=drop_blank_texts)
    splits, overlap = split_overlap(splits, name, split_overlap_mode)
    check_labels(splits, name)
    absent = absent_classes(splits)
    for split, missing in absent.items():
        if missing:
            logger.warning("dataset %r: train class(es) %s absent from %s; its macro-F1 still averages over all "
                           "classes, and those score 0 there", name, missing, split)
    return ({split: splits[split] for split in SPLITS},
            {"split_overlap": overlap, "absent_classes": absent})


def prepare_splits(
    name: str, spec: Mapping[str, Any], *, validation_fraction: float = 0.2, seed: int = 0,
    base_dir: str | Path = ".", drop_blank_texts: bool = False, split_overlap_mode: str = "warn",
) -> dict[str, pd.DataFrame]:
    """Load dataset ``name`` as configured and return validated train/validation/test frames.

    Rows with a missing, empty or whitespace-only text are an error, or are dropped (and counted in
    the log) with ``drop_blank_texts``; either way a row id names the row's position in its source.
    Texts shared between splits are logged (``split_overlap``); ``prepare_dataset`` also returns the counts.
    """
    return prepare_dataset(name, spec, validation_fraction=validation_fraction, seed=seed, base_dir=base_dir,
                           drop_blank_texts=drop_blank_texts, split_overlap_mode=split_overlap_mode)[0]


def _load_and_standardise(
    name: str, spec: Mapping[str, Any], *, validation_fraction: float, seed: int, base_dir: str | Path,
    drop_blank_texts: bool,
) -> dict[str, pd.DataFrame]:
    source = spec["source"]
    if source == "local":
        directory = (Path(base_dir) / spec["path"]).resolve()
        if not directory.is_dir():
            relative = "" if Path(spec["path"]).is_absolute() else \
                f" ({spec['path']!r} is relative to {Path(base_dir).resolve()}, the repository root)"
            raise DatasetError(f"dataset {name!r}: local directory {directory} does not exist{relative}")
        raw = load_local_splits(directory)
    elif source == "hub":
        raw = load_hub_splits(spec)
    elif source == "demo":
        raw = demo_splits(spec["name"], seed=spec.get("seed", 0))
    else:
        raise DatasetError(f"dataset {name!r}: unknown source {source!r}; use hub, local or demo")
    for required in ("train", "test"):
        if required not in raw:
            raise DatasetError(f"dataset {name!r}: no {required} split configured")
    splits = {
        split: _standardise(frame, split, spec, where=f"dataset {name!r} {split} ({frame.attrs.get('source', source)})",
                            name=name, drop_blank_texts=drop_blank_texts)
        for split, frame in raw.items()
    }
    if "validation" not in splits:
        splits["train"], splits["validation"] = carve_validation(splits["train"], validation_fraction, seed,
                                                                      name=name)
    return splits


def stratified_sample(frame: pd.DataFrame, n: int, seed: int, *, where: str = "") -> pd.DataFrame:
    """Draw ``n`` rows stratified by label (seeded); error if the frame has fewer rows.

    Each class gets its share of ``n`` rounded by largest remainder (never more rows than it has),
    so any ``n`` up to the frame's size works, unlike sklearn's split which needs a leftover row
    per class. Rows keep their order in the frame.
    """
    if len(frame) < n:
        raise DatasetError(f"{where}: n_samples is {n} but only {len(frame)} rows are available; "
                           f"lower selection.n_samples to at most {len(frame)}")
    counts = frame["label"].value_counts().sort_index()
    exact = counts * (n / len(frame))
    quota = exact.astype(int)
    remainder = (exact - quota).sort_values(ascending=False, kind="stable")
    for label in remainder.index[: n - int(quota.sum())]:
        quota[label] += 1
    picked = [group.sample(n=int(quota[label]), random_state=seed)
              for label, group in frame.groupby("label", sort=True)]
    return pd.concat(picked).sort_index().reset_index(drop=True)


def selection_samples(split: str | Path, test: str | Path, n: int, seed: int, *, dataset: str) -> pd.DataFrame:
    """The selection rows of a dataset: ``n`` rows of the prepared ``split`` file stratified by label, never a
    test row. The one draw every rule that reads them makes (extract_hidden, cls_features): the same rows."""
    samples = stratified_sample(read_parquet(split), n, seed, where=f"dataset {dataset!r} ({split})")
    check_disjoint(samples, read_parquet(test, columns=["row_id"]), "selection samples", "test")
    return samples


def check_disjoint(rows: pd.DataFrame, other: pd.DataFrame, what: str, other_name: str) -> None:
    """Refuse rows that also appear (by row id) in another split, e.g. selection samples in test."""
    shared = set(rows["row_id"]) & set(other["row_id"])
    if shared:
        raise DatasetError(f"{what} include {len(shared)} {other_name} row(s), e.g. {sorted(shared)[:3]}")
