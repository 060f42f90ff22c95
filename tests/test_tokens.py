"""Cached token ids (pifi.tokens): length buckets, padding of stored rows, batches and row caps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertTokenizer

from pifi.tokens import TokenizedSplit, batches, bucket_for, capped_rows, length_buckets, tokenize_split

WORDS = ["the", "film", "was", "good", "bad", "plot", "very", "quite", "cast", "and", "story"]
PAD_ID = 0


@pytest.fixture(scope="module")
def bert_tokenizer():
    """A real BERT (WordPiece) tokenizer: it makes token_type_ids, 1 on a pair's second segment."""
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    return BertTokenizer(vocab=vocab)


# --- length_buckets -------------------------------------------------------------------------------------

@pytest.mark.parametrize("max_length, expected", [
    (100, [32, 64, 100]),
    (32, [32]),
    (128, [32, 64, 128]),
    (16, [16]),
    (33, [32, 33]),
    (512, [32, 64, 128, 256, 512]),
])
def test_length_buckets(max_length, expected):
    assert length_buckets(max_length) == expected


def test_bucket_for_is_the_smallest_bucket_that_holds_the_row():
    buckets = [32, 64, 100]
    assert [bucket_for(n, buckets) for n in (1, 32, 33, 64, 65, 100)] == [32, 32, 64, 64, 100, 100]
    with pytest.raises(ValueError, match="longer than the largest bucket 100"):
        bucket_for(101, buckets)


# --- tokenize_split -------------------------------------------------------------------------------------

def test_tokenize_split_stores_flat_ids_lengths_and_labels(bert_tokenizer):
    frame = pd.DataFrame({"text": ["the film was good", "bad", "the plot and the cast was very very quite bad"],
                          "label": [1, 0, 0]})
    tensors = tokenize_split(bert_tokenizer, frame, max_length=8, prefix="train")
    assert set(tensors) == {"train.input_ids", "train.lengths", "train.labels", "train.token_type_ids"}
    expected = bert_tokenizer(frame["text"].tolist(), truncation=True, max_length=8)["input_ids"]
    assert tensors["train.lengths"].tolist() == [6, 3, 8]  # the last is truncated to max_length
    assert tensors["train.lengths"].tolist() == [len(row) for row in expected]
    assert tensors["train.input_ids"].tolist() == [t for row in expected for t in row]
    assert tensors["train.labels"].dtype == torch.int64 and tensors["train.labels"].tolist() == [1, 0, 0]
    assert tensors["train.token_type_ids"].tolist() == [0] * 17  # single texts: one segment


def test_tokenize_split_encodes_text_pairs_as_pairs(bert_tokenizer):
    frame = pd.DataFrame({"text": ["the film was good", "bad"],
                          "text_pair": ["the plot", "very quite the cast"], "label": [1, 0]})
    tensors = tokenize_split(bert_tokenizer, frame, max_length=16, prefix="validation")
    expected = bert_tokenizer(frame["text"].tolist(), frame["text_pair"].tolist(), truncation=True, max_length=16)
    cls, sep = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    # [CLS] the film was good [SEP] the plot [SEP] / [CLS] bad [SEP] very quite the cast [SEP]
    assert tensors["validation.lengths"].tolist() == [9, 8]
    ids = tensors["validation.input_ids"].tolist()
    assert ids == [t for row in expected["input_ids"] for t in row]
    assert ids[:9].count(sep) == 2 and ids[0] == cls and ids[9] == cls
    types = tensors["validation.token_type_ids"].tolist()
    assert types == [0, 0, 0, 0, 0, 0, 1, 1, 1] + [0, 0, 0, 1, 1, 1, 1, 1]
    assert types == [t for row in expected["token_type_ids"] for t in row]
    # and they reach the model's batch intact, padded with segment 0
    split = TokenizedSplit.from_tensors(tensors, "validation", pad_id=bert_tokenizer.pad_token_id, width=16)
    (inputs, labels), = batches(split, np.arange(2), 2, [16])
    assert inputs["token_type_ids"].tolist() == [
        [0, 0, 0, 0, 0, 0, 1, 1, 1] + [0] * 7, [0, 0, 0, 1, 1, 1, 1, 1] + [0] * 8]
    padded = bert_tokenizer(frame["text"].tolist(), frame["text_pair"].tolist(), padding="max_length",
                            max_length=16, return_tensors="pt")
    assert torch.equal(inputs["input_ids"], padded["input_ids"])
    assert torch.equal(inputs["attention_mask"], padded["attention_mask"])
    assert torch.equal(inputs["token_type_ids"], padded["token_type_ids"])
    assert labels.tolist() == [1, 0]


def test_tokenize_split_without_token_types(tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)  # the word tokenizer makes no token_type_ids
    tensors = tokenize_split(tokenizer, pd.DataFrame({"text": ["the film", "bad"], "label": [1, 0]}), 8, "test")
    assert "test.token_type_ids" not in tensors
    split = TokenizedSplit.from_tensors(tensors, "test", pad_id=tokenizer.pad_token_id, width=8)
    assert split.token_type_ids is None
    (inputs, _), = batches(split, np.arange(2), 4, [8])
    assert set(inputs) == {"input_ids", "attention_mask"}


# --- TokenizedSplit.from_tensors ------------------------------------------------------------------------

def stored_split(prefix: str = "train") -> dict[str, torch.Tensor]:
    """Five rows of lengths 3, 1, 5, 2, 4; row r's tokens are 10*(r+1) + position; types 1 from position 2."""
    lengths = [3, 1, 5, 2, 4]
    ids = [10 * (r + 1) + p for r, n in enumerate(lengths) for p in range(n)]
    types = [int(p >= 2) for n in lengths for p in range(n)]
    return {f"{prefix}.input_ids": torch.tensor(ids, dtype=torch.int32),
            f"{prefix}.lengths": torch.tensor(lengths, dtype=torch.int32),
            f"{prefix}.token_type_ids": torch.tensor(types, dtype=torch.int8),
            f"{prefix}.labels": torch.tensor([0, 1, 2, 1, 0])}


def expected_row(r: int, n: int, width: int, pad: int) -> list[int]:
    return [10 * (r + 1) + p for p in range(n)] + [pad] * (width - n)


def test_from_tensors_pads_every_row():
    split = TokenizedSplit.from_tensors(stored_split(), "train", pad_id=PAD_ID, width=6)
    lengths = [3, 1, 5, 2, 4]
    assert len(split) == 5
    assert split.input_ids.dtype == torch.int64 and split.input_ids.shape == (5, 6)
    assert split.input_ids.tolist() == [expected_row(r, n, 6, PAD_ID) for r, n in enumerate(lengths)]
    assert split.token_type_ids.dtype == torch.int64
    assert split.token_type_ids.tolist() == [[int(2 <= p < n) for p in range(6)] for n in lengths]
    assert split.lengths.tolist() == lengths
    assert split.labels.tolist() == [0, 1, 2, 1, 0]


def test_from_tensors_keeps_the_chosen_rows_in_the_given_order():
    rows = np.array([4, 0, 2])
    split = TokenizedSplit.from_tensors(stored_split("validation"), "validation", pad_id=7, width=5, rows=rows)
    assert len(split) == 3
    assert split.input_ids.tolist() == [expected_row(4, 4, 5, 7), expected_row(0, 3, 5, 7), expected_row(2, 5, 5, 7)]
    assert split.token_type_ids.tolist() == [[0, 0, 1, 1, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 1]]
    assert split.lengths.tolist() == [4, 3, 5]
    assert split.labels.tolist() == [0, 0, 2]


def test_from_tensors_with_an_empty_row_selection():
    split = TokenizedSplit.from_tensors(stored_split(), "train", pad_id=PAD_ID, width=6,
                                        rows=np.array([], dtype=int))
    assert len(split) == 0 and split.input_ids.shape == (0, 6) and split.labels.shape == (0,)


def test_from_tensors_rejects_a_row_wider_than_the_width():
    with pytest.raises(ValueError, match="a row has 5 tokens, more than the width 4"):
        TokenizedSplit.from_tensors(stored_split(), "train", pad_id=PAD_ID, width=4)
    # only the kept rows count
    split = TokenizedSplit.from_tensors(stored_split(), "train", pad_id=PAD_ID, width=4, rows=np.array([0, 1, 3]))
    assert split.lengths.tolist() == [3, 1, 2]


def test_from_frame_equals_the_tokenizers_own_padding(bert_tokenizer):
    frame = pd.DataFrame({"text": ["the film was good", "bad", "very quite the cast and the story"],
                          "label": [1, 0, 1]})
    split = TokenizedSplit.from_frame(bert_tokenizer, frame, max_length=12)
    padded = bert_tokenizer(frame["text"].tolist(), padding="max_length", truncation=True, max_length=12,
                            return_tensors="pt")
    assert torch.equal(split.input_ids, padded["input_ids"])
    assert torch.equal(split.token_type_ids, padded["token_type_ids"])
    assert split.lengths.tolist() == padded["attention_mask"].sum(1).tolist()
    assert split.labels.tolist() == [1, 0, 1]


# --- batches --------------------------------------------------------------------------------------------

def test_batches_cover_every_row_once_with_bucket_widths_and_matching_masks():
    rng = np.random.default_rng(0)
    n, width = 23, 100
    lengths = rng.integers(1, width + 1, size=n)
    lengths[:3] = [5, 33, 100]  # a short, a just-over-a-bucket and a full row
    ids = torch.tensor([int(1000 * (r + 1) + p) for r, k in enumerate(lengths) for p in range(k)])
    tensors = {"s.input_ids": ids, "s.lengths": torch.tensor(lengths), "s.labels": torch.arange(n)}
    split = TokenizedSplit.from_tensors(tensors, "s", pad_id=PAD_ID, width=width)
    buckets = length_buckets(width)
    order = rng.permutation(n)
    seen = []
    for start, (inputs, labels) in zip(range(0, n, 4), batches(split, order, 4, buckets), strict=True):
        rows = order[start:start + 4]
        seen.extend(labels.tolist())
        assert labels.tolist() == rows.tolist()  # label r belongs to row r, in the order's order
        w = inputs["input_ids"].shape[1]
        assert w in buckets and w == min(b for b in buckets if b >= lengths[rows].max())
        assert inputs["attention_mask"].shape == (len(rows), w) and inputs["attention_mask"].dtype == torch.int64
        assert inputs["attention_mask"].sum(1).tolist() == lengths[rows].tolist()
        for i, r in enumerate(rows):
            k = lengths[r]
            assert inputs["attention_mask"][i].tolist() == [1] * k + [0] * (w - k)
            assert inputs["input_ids"][i].tolist() == [1000 * (r + 1) + p for p in range(k)] + [PAD_ID] * (w - k)
        assert "token_type_ids" not in inputs
    assert sorted(seen) == list(range(n)) and seen == order.tolist()


def test_batches_last_partial_batch_and_small_widths():
    split = TokenizedSplit.from_tensors(stored_split(), "train", pad_id=PAD_ID, width=6)
    out = list(batches(split, np.array([1, 3, 0, 2, 4]), 2, [2, 4, 6]))
    assert [inputs["input_ids"].shape for inputs, _ in out] == [(2, 2), (2, 6), (1, 4)]
    assert [labels.tolist() for _, labels in out] == [[1, 1], [0, 2], [0]]
    assert out[0][0]["token_type_ids"].tolist() == [[0, 0], [0, 0]]
    assert out[1][0]["token_type_ids"].tolist() == [[0, 0, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0]]


# --- capped_rows ----------------------------------------------------------------------------------------

def test_capped_rows_is_the_identity_without_a_cap():
    assert capped_rows(7, None, seed=0).tolist() == list(range(7))
    assert capped_rows(7, 7, seed=0).tolist() == list(range(7))
    assert capped_rows(7, 100, seed=3).tolist() == list(range(7))


def test_capped_rows_is_a_seeded_sorted_subset():
    rows = capped_rows(1000, 50, seed=1)
    assert len(rows) == 50 and len(set(rows.tolist())) == 50
    assert rows.tolist() == sorted(rows.tolist())
    assert rows.min() >= 0 and rows.max() < 1000
    assert np.array_equal(rows, capped_rows(1000, 50, seed=1))       # the same seed, the same rows
    assert not np.array_equal(rows, capped_rows(1000, 50, seed=2))   # another seed, other rows
    assert rows.tolist() != list(range(50))                          # a draw, not the first rows
    expected = np.sort(np.random.default_rng(1).choice(1000, size=50, replace=False))
    assert np.array_equal(rows, expected)  # the documented draw, so caps stay the same across versions
