"""Datasets: load a labelled classification dataset from the hub, a local directory or the demo
generator, validate it, and give every row a stable id.

A prepared split is a frame with ``row_id``, ``text``, optionally ``text_pair``, and ``label``
(integers 0..C-1). Row ids name the source split and position (``train-000042``), so a
validation split carved from train still says where its rows came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.model_selection import train_test_split

from pifi.demo_data import demo_splits

SPLITS = ("train", "validation", "test")
LOCAL_FORMATS = ("jsonl", "csv", "parquet")


class DatasetError(ValueError):
    """A dataset that cannot be used as configured; the message says what and where."""


def _read_local_file(path: Path) -> pd.DataFrame:
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return pd.read_parquet(path)


def _find_local_split(directory: Path, split: str) -> Path | None:
    found = [directory / f"{split}.{ext}" for ext in LOCAL_FORMATS if (directory / f"{split}.{ext}").exists()]
    if len(found) > 1:
        raise DatasetError(f"{directory}: several files for split {split!r}: {[p.name for p in found]}; keep one")
    return found[0] if found else None


def load_local_splits(directory: str | Path) -> dict[str, pd.DataFrame]:
    """Read ``{train,validation,test}.{jsonl,csv,parquet}`` from a directory; validation may be absent."""
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


def _standardise(frame: pd.DataFrame, split: str, spec: Mapping[str, Any], where: str) -> pd.DataFrame:
    """Rename configured columns to text/text_pair/label, map labels, attach row ids."""
    columns = {spec.get("text_column", "text"): "text", spec.get("label_column", "label"): "label"}
    if spec.get("text_pair_column"):
        columns[spec["text_pair_column"]] = "text_pair"
    elif "text_pair" in frame.columns:
        columns["text_pair"] = "text_pair"
    missing = [source for source in columns if source not in frame.columns]
    if missing:
        raise DatasetError(
            f"{where}: missing column(s) {missing}; found {list(frame.columns)}. "
            "Set text_column/label_column in the dataset's config entry."
        )
    source_split = frame.attrs.get("source_split", split)
    out = frame[list(columns)].rename(columns=columns).reset_index(drop=True)
    out.insert(0, "row_id", [f"{source_split}-{i:06d}" for i in range(len(out))])
    if out["text"].isna().any():
        raise DatasetError(f"{where}: {int(out['text'].isna().sum())} row(s) have no text")
    label_map = spec.get("label_map")
    if label_map:
        label_map = {str(k): int(v) for k, v in label_map.items()}
        keep = out["label"].astype(str).isin(label_map)
        out = out[keep].copy()
        out["label"] = out["label"].astype(str).map(label_map)
    if not pd.api.types.is_integer_dtype(out["label"]):
        raise DatasetError(
            f"{where}: labels must be integers, got {out['label'].dtype} (e.g. {out['label'].iloc[0]!r}); "
            "map them with label_map"
        )
    return out.reset_index(drop=True)


def carve_validation(train: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a stratified, seeded validation set off the training rows."""
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
            raise DatasetError(f"dataset {name!r}: split {split!r} is empty")
        if len(present) < 2:
            raise DatasetError(f"dataset {name!r}: split {split!r} has one class only ({present}); "
                               "a classifier cannot be trained or scored on it")
        unseen = set(present) - set(classes)
        if unseen:
            raise DatasetError(f"dataset {name!r}: split {split!r} has labels {sorted(unseen)} not in train")
    if classes != list(range(len(classes))):
        raise DatasetError(f"dataset {name!r}: labels must be 0..C-1, got {classes}; remap them with label_map")
    return len(classes)


def prepare_splits(
    name: str, spec: Mapping[str, Any], *, validation_fraction: float = 0.2, seed: int = 0,
    base_dir: str | Path = ".",
) -> dict[str, pd.DataFrame]:
    """Load dataset ``name`` as configured and return validated train/validation/test frames."""
    source = spec["source"]
    if source == "local":
        directory = Path(base_dir) / spec["path"]
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
        split: _standardise(frame, split, spec, where=f"dataset {name!r} {split} ({frame.attrs.get('source', source)})")
        for split, frame in raw.items()
    }
    if "validation" not in splits:
        splits["train"], splits["validation"] = carve_validation(splits["train"], validation_fraction, seed)
    check_labels(splits, name)
    return {split: splits[split] for split in SPLITS}


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


def check_disjoint(rows: pd.DataFrame, other: pd.DataFrame, what: str, other_name: str) -> None:
    """Refuse rows that also appear (by row id) in another split, e.g. selection samples in test."""
    shared = set(rows["row_id"]) & set(other["row_id"])
    if shared:
        raise DatasetError(f"{what} include {len(shared)} {other_name} row(s), e.g. {sorted(shared)[:3]}")


def cap_rows(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """The first ``limit`` rows of a seeded shuffle (``max_train_samples``-style knobs for tiny runs)."""
    if limit is None or limit >= len(frame):
        return frame
    return frame.sample(n=limit, random_state=seed).sort_index().reset_index(drop=True)
