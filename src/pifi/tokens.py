"""Token ids, computed once per (dataset, SLM) and cached, and batches padded to a few fixed widths.

A tokenized split is stored flat: ``{split}.input_ids`` (all rows' ids concatenated),
``{split}.lengths`` (one per row), ``{split}.token_type_ids`` (when the tokenizer makes them) and
``{split}.labels``. Training pads rows into a small fixed set of length buckets (e.g. 32, 64, 100)
instead of each batch's own longest row: a handful of shapes keeps a compiled (CUDA-graph) step
reusable, and the padded matrix lives on the device, so a batch is an index, not a host collation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

SPLITS = ("train", "validation", "test")


def length_buckets(max_length: int) -> list[int]:
    """Powers of two from 32 below ``max_length``, then ``max_length`` itself (100 -> 32, 64, 100)."""
    buckets, width = [], 32
    while width < max_length:
        buckets.append(width)
        width *= 2
    return buckets + [max_length]


def tokenize_split(tokenizer, frame: pd.DataFrame, max_length: int, prefix: str) -> dict[str, torch.Tensor]:
    """One split's ids, flat, with its row lengths and labels, under ``{prefix}.`` names."""
    pairs = frame["text_pair"].tolist() if "text_pair" in frame.columns else None
    encoded = tokenizer(frame["text"].tolist(), pairs, truncation=True, max_length=max_length)
    ids = encoded["input_ids"]
    tensors = {
        f"{prefix}.input_ids": torch.tensor([t for row in ids for t in row], dtype=torch.int32),
        f"{prefix}.lengths": torch.tensor([len(row) for row in ids], dtype=torch.int32),
        f"{prefix}.labels": torch.as_tensor(frame["label"].to_numpy(copy=True), dtype=torch.int64),
    }
    if "token_type_ids" in encoded:
        tensors[f"{prefix}.token_type_ids"] = torch.tensor(
            [t for row in encoded["token_type_ids"] for t in row], dtype=torch.int8)
    return tensors


@dataclass
class TokenizedSplit:
    """Rows padded to the widest bucket; batches take a slice of columns."""

    input_ids: torch.Tensor               # N x T, int64, padded with pad_id
    token_type_ids: torch.Tensor | None   # N x T, int64
    lengths: np.ndarray                   # N, on the host: bucket choice needs no device sync
    labels: torch.Tensor                  # N, int64

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], split: str, *, pad_id: int, width: int,
                     rows: np.ndarray | None = None) -> "TokenizedSplit":
        """Rows ``rows`` (default all) of a stored split, padded to ``width`` columns."""
        lengths = tensors[f"{split}.lengths"].numpy().astype(np.int64)
        keep = np.arange(len(lengths)) if rows is None else np.asarray(rows, dtype=np.int64)
        kept = lengths[keep]
        if len(kept) and kept.max() > width:
            raise ValueError(f"{split}: a row has {kept.max()} tokens, more than the width {width}")
        # Flat positions of the kept rows' tokens, in row order, without a Python loop per row.
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[keep]
        offsets = np.arange(kept.sum()) - np.repeat(np.cumsum(kept) - kept, kept)
        flat_index = torch.from_numpy(np.repeat(starts, kept) + offsets)
        mask = torch.from_numpy(np.arange(width)[None, :] < kept[:, None])

        def padded(flat: torch.Tensor, fill: int) -> torch.Tensor:
            out = torch.full((len(keep), width), fill, dtype=torch.int64)
            out[mask] = flat.to(torch.int64)[flat_index]
            return out

        types = tensors.get(f"{split}.token_type_ids")
        return cls(padded(tensors[f"{split}.input_ids"], pad_id),
                   None if types is None else padded(types, 0),
                   kept, tensors[f"{split}.labels"][torch.from_numpy(keep)].clone())

    @classmethod
    def from_frame(cls, tokenizer, frame: pd.DataFrame, max_length: int) -> "TokenizedSplit":
        """Tokenize a frame directly (what the tokenize rule stores, without the file)."""
        tensors = tokenize_split(tokenizer, frame, max_length, "rows")
        return cls.from_tensors(tensors, "rows", pad_id=tokenizer.pad_token_id, width=max_length)

    def to(self, device: torch.device) -> "TokenizedSplit":
        types = None if self.token_type_ids is None else self.token_type_ids.to(device)
        return TokenizedSplit(self.input_ids.to(device), types, self.lengths, self.labels.to(device))


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``length`` tokens."""
    for width in buckets:
        if length <= width:
            return width
    raise ValueError(f"a row of {length} tokens is longer than the largest bucket {buckets[-1]}")


def batches(split: TokenizedSplit, order: np.ndarray, batch_size: int,
            buckets: Sequence[int]) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """(model inputs, labels) for consecutive ``batch_size`` rows of ``order``, padded to a bucket."""
    device = split.input_ids.device
    order_on_device = torch.as_tensor(order, dtype=torch.long).to(device, non_blocking=True)
    positions = torch.arange(buckets[-1], device=device)
    lengths = torch.as_tensor(split.lengths).to(device, non_blocking=True)
    for start in range(0, len(order), batch_size):
        width = bucket_for(int(split.lengths[order[start:start + batch_size]].max()), buckets)
        index = order_on_device[start:start + batch_size]
        inputs = {"input_ids": split.input_ids[index, :width],
                  "attention_mask": (positions[:width] < lengths[index, None]).to(torch.int64)}
        if split.token_type_ids is not None:
            inputs["token_type_ids"] = split.token_type_ids[index, :width]
        yield inputs, split.labels[index]



def capped_rows(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Row indices for ``max_*_samples``-style caps: a seeded draw of ``limit`` rows, in row order."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
