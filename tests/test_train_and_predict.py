"""What train.py's numbers rest on, checked against right answers computed apart from the code under test:
the test predictions come from the best epoch's weights, in the caller's row order, and the head's dropout
is the spec's and is on only while training."""

from __future__ import annotations

import copy
import random

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from conftest import FILLER_WORDS, NEGATIVE_WORD, POSITIVE_WORD
from pifi.model import ModelSpec, build_classifier
from pifi.tokens import TokenizedSplit
from pifi.training import TrainingConfig, predict_proba, restore_best_state, train_and_predict

CPU = torch.device("cpu")
MAX_LENGTH = 64  # two length buckets (32, 64): rows of one batch come from both
EPOCHS = 4


def keyword_frame(n: int, seed: int, *, inverted: bool = False) -> pd.DataFrame:
    """POSITIVE_WORD -> 1, NEGATIVE_WORD -> 0 among 1 to 40 filler words (so rows have many lengths);
    ``inverted`` swaps the labels, so that the better a model learns the task the worse it scores."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.randrange(2)
        words = rng.choices(FILLER_WORDS, k=rng.choice([1, 2, 4, 7, 12, 25, 40]))
        words.insert(rng.randrange(len(words) + 1), POSITIVE_WORD if label else NEGATIVE_WORD)
        rows.append((" ".join(words), 1 - label if inverted else label))
    return pd.DataFrame(rows, columns=["text", "label"])


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


def tokenized(tokenizer, frame: pd.DataFrame) -> TokenizedSplit:
    return TokenizedSplit.from_frame(tokenizer, frame, MAX_LENGTH)


def one_row_at_a_time(model: torch.nn.Module, tokenizer, texts: list[str]) -> np.ndarray:
    """Class probabilities computed row by row, unpadded: no batching, sorting or bucketing to get wrong."""
    model.eval()
    out = []
    with torch.no_grad():
        for text in texts:
            inputs = tokenizer(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            out.append(torch.softmax(model(**inputs).float(), dim=-1)[0].numpy())
    return np.stack(out)


def with_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    twin = copy.deepcopy(model)
    twin.load_state_dict(state, strict=False)
    return twin


def train_run(tiny_bert_dir, tokenizer, *, inverted_validation: bool) -> dict:
    """One run on the keyword task; the weights of every epoch are copied as the epoch ends
    (``on_epoch``), independently of the run's own bookkeeping of its best state."""
    torch.manual_seed(0)
    model = build_classifier(ModelSpec(method="base", slm_path=str(tiny_bert_dir), num_labels=2, dropout=0.2))
    epoch_weights: list[dict[str, torch.Tensor]] = []
    test = keyword_frame(40, 3)
    cfg = TrainingConfig(learning_rate=2e-3, batch_size=8, epochs=EPOCHS, max_length=MAX_LENGTH,
                         eval_batch_size=16, seed=1)
    validation = keyword_frame(32, 2, inverted=inverted_validation)
    result, probabilities = train_and_predict(
        model, tokenized(tokenizer, keyword_frame(64, 1)), tokenized(tokenizer, validation), tokenized(tokenizer, test),
        cfg, CPU, on_epoch=lambda record: epoch_weights.append(copy.deepcopy(model.trainable_state_dict())))
    return dict(model=model, result=result, probabilities=probabilities, epoch_weights=epoch_weights, test=test)


@pytest.fixture(scope="module")
def peaks_early(tiny_bert_dir, tokenizer) -> dict:
    """A run whose best validation epoch is not the last: its validation labels are the task's, inverted,
    so validation accuracy falls as the model learns."""
    return train_run(tiny_bert_dir, tokenizer, inverted_validation=True)


@pytest.fixture(scope="module")
def learns(tiny_bert_dir, tokenizer) -> dict:
    """A run that learns the task: its rows' predictions differ, so a reordering of them shows."""
    return train_run(tiny_bert_dir, tokenizer, inverted_validation=False)


def test_the_best_epoch_is_not_the_last(peaks_early):
    """Guard for the tests below: restoring nothing would leave the last epoch's weights, which differ."""
    assert len(peaks_early["epoch_weights"]) == EPOCHS
    accuracies = [h["validation_accuracy"] for h in peaks_early["result"].history]
    assert peaks_early["result"].best_epoch == int(np.argmax(accuracies)) + 1 < EPOCHS


def test_training_leaves_the_model_in_its_best_epochs_state(peaks_early):
    result = peaks_early["result"]
    best = peaks_early["epoch_weights"][result.best_epoch - 1]
    state = peaks_early["model"].trainable_state_dict()
    assert state.keys() == best.keys() == result.best_state.keys()
    for name, value in best.items():
        assert torch.equal(state[name], value), name
        assert torch.equal(result.best_state[name], value), name


def test_test_predictions_are_the_best_epochs(peaks_early, tokenizer):
    model, test, weights = peaks_early["model"], peaks_early["test"], peaks_early["epoch_weights"]
    texts = test["text"].tolist()
    best = one_row_at_a_time(with_state(model, weights[peaks_early["result"].best_epoch - 1]), tokenizer, texts)
    last = one_row_at_a_time(with_state(model, weights[-1]), tokenizer, texts)
    assert np.abs(best - last).max() > 0.05  # the last epoch's predictions would show
    np.testing.assert_allclose(peaks_early["probabilities"], best, atol=2e-5)


def test_test_predictions_are_in_the_callers_row_order(learns, tokenizer):
    test = learns["test"]
    lengths = tokenized(tokenizer, test).lengths
    by_length = np.argsort(lengths, kind="stable")
    assert len(set(lengths)) > 5 and not np.array_equal(by_length, np.arange(len(test)))
    expected = one_row_at_a_time(learns["model"], tokenizer, test["text"].tolist())
    # the model learnt the task: better than the majority class, so rows' predictions differ by label
    accuracy = float((expected.argmax(axis=1) == test["label"].to_numpy()).mean())
    assert accuracy > max(test["label"].mean(), 1 - test["label"].mean()) + 0.2
    assert np.abs(expected[by_length] - expected).max() > 0.05  # so any reordering shows
    np.testing.assert_allclose(learns["probabilities"], expected, atol=2e-5)


def test_predict_proba_returns_the_rows_in_their_given_order(tiny_bert_dir, tokenizer):
    """Rows are scored shortest first, in buckets, and must come back where they were."""
    torch.manual_seed(2)
    model = build_classifier(ModelSpec(method="base", slm_path=str(tiny_bert_dir), num_labels=2))
    with torch.no_grad():  # at BERT's init (std 0.02) the CLS state hardly depends on the tokens: every
        for module in model.encoder.modules():  # row would get the same prediction, in any order
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0.0, 0.3)
    frame = keyword_frame(24, 7)
    split = tokenized(tokenizer, frame)
    by_length = np.argsort(split.lengths, kind="stable")
    assert not np.array_equal(by_length, np.arange(len(frame)))
    expected = one_row_at_a_time(model, tokenizer, frame["text"].tolist())
    assert np.abs(expected - expected[by_length]).max() > 100 * 2e-5  # far beyond the tolerance below
    np.testing.assert_allclose(predict_proba(model, split, 5, CPU), expected, atol=2e-5)


def test_restore_best_state_refuses_a_state_of_another_model(tiny_bert_dir):
    from pifi.training import TrainingResult

    model = build_classifier(ModelSpec(method="base", slm_path=str(tiny_bert_dir), num_labels=2))
    state = dict(model.trainable_state_dict())
    del state["head.3.bias"]
    with pytest.raises(ValueError, match=r"missing \['head\.3\.bias'\]"):
        restore_best_state(model, TrainingResult(best_state=state, best_epoch=1))


# --- the head's dropout ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_the_heads_dropout_has_the_specs_rate(rate, tiny_bert_dir, tiny_llama_dir):
    for spec in (ModelSpec(method="base", slm_path=str(tiny_bert_dir), num_labels=2, dropout=rate),
                 ModelSpec(method="pifi", slm_path=str(tiny_bert_dir), num_labels=2, dropout=rate,
                           llm_path=str(tiny_llama_dir), llm_layer=1)):
        dropouts = [m for m in build_classifier(spec).head.modules() if isinstance(m, torch.nn.Dropout)]
        assert [d.p for d in dropouts] == [rate]


def test_the_heads_dropout_is_on_in_train_mode_and_off_in_eval_mode(tiny_bert_dir, tokenizer):
    """The encoder is kept in eval mode: whatever differs between two passes is the head's dropout."""
    inputs = dict(tokenizer(["the film was good", "bad plot and cast"], padding=True, return_tensors="pt"))

    def two_passes(dropout: float, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(5)
        model = build_classifier(ModelSpec(method="base", slm_path=str(tiny_bert_dir), num_labels=2,
                                           dropout=dropout))
        model.train(train)
        model.encoder.eval()
        with torch.no_grad():
            return model(**inputs), model(**inputs)

    first, second = two_passes(0.5, train=True)
    assert (first - second).abs().max() > 1e-3
    torch.testing.assert_close(*two_passes(0.5, train=False), rtol=0, atol=0)
    torch.testing.assert_close(*two_passes(0.0, train=True), rtol=0, atol=0)
