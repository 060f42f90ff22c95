"""Epoch checkpoints (pifi.resume): a training run that is stopped and resumed ends exactly as an unbroken run."""

from __future__ import annotations

import copy
import json
import logging
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from conftest import FILLER_WORDS, NEGATIVE_WORD, POSITIVE_WORD
from pifi.model import ModelSpec, build_classifier
from pifi.resume import EpochState, ResumeStore, fingerprint
from pifi.tokens import TokenizedSplit
from pifi.training import TrainingConfig, train_classifier

CPU = torch.device("cpu")
EPOCHS = 4
# lr high enough that every epoch changes the weights a lot; dropout on, so the RNG state matters too
CFG = TrainingConfig(learning_rate=2e-3, batch_size=8, epochs=EPOCHS, max_length=16, eval_batch_size=16, seed=5)


def toy_frame(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(FILLER_WORDS, k=rng.randint(1, 6))
        words.insert(rng.randrange(len(words) + 1), POSITIVE_WORD if i % 2 else NEGATIVE_WORD)
        rows.append((" ".join(words), i % 2))
    return pd.DataFrame(rows, columns=["text", "label"])


class Interrupted(Exception):
    pass


def interrupt_at(epoch: int):
    """An on_epoch callback that stops the run when ``epoch`` ends, before its checkpoint is saved."""
    def callback(record):
        if record["epoch"] == epoch:
            raise Interrupted(epoch)
    return callback


@pytest.fixture(scope="module")
def setup(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    train = TokenizedSplit.from_frame(tokenizer, toy_frame(32, 0), CFG.max_length)
    validation = TokenizedSplit.from_frame(tokenizer, toy_frame(16, 1), CFG.max_length)
    torch.manual_seed(0)
    initial = build_classifier(ModelSpec(method="base", slm_path=str(tiny_bert_dir), num_labels=2, dropout=0.2))
    return initial, train, validation


def run(setup, *, resume=None, on_epoch=None, cfg=CFG):
    """A run from a fresh copy of the same initial weights; returns (result, trained model)."""
    initial, train, validation = setup
    model = copy.deepcopy(initial)
    return train_classifier(model, train, validation, cfg, CPU, resume=resume, on_epoch=on_epoch), model


def checkpoint_files(directory) -> dict[str, bytes]:
    """Every file of a store, by name: the tests do not depend on the store's file layout."""
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()}


@pytest.fixture(scope="module")
def unbroken(setup):
    return run(setup)


def assert_same_run(got, expected):
    (result, model), (expected_result, expected_model) = got, expected
    assert result.history == expected_result.history
    assert result.best_epoch == expected_result.best_epoch
    assert result.best_state.keys() == expected_result.best_state.keys()
    for key, value in expected_result.best_state.items():
        assert torch.equal(result.best_state[key], value), key
    final, expected_final = model.trainable_state_dict(), expected_model.trainable_state_dict()
    for key, value in expected_final.items():
        assert torch.equal(final[key], value), key


def test_the_unbroken_run_changes_across_epochs(unbroken):
    """Guards for the tests below: a resume that skipped or repeated an epoch would show, and the best epoch
    is neither the first nor the last, so a run resumed after it must take its best state from the checkpoint."""
    losses = [h["train_loss"] for h in unbroken[0].history]
    assert len(set(losses)) == EPOCHS
    assert 1 < unbroken[0].best_epoch < EPOCHS


@pytest.mark.parametrize("stop_at", [2, EPOCHS])
def test_an_interrupted_run_resumes_to_the_unbroken_result(stop_at, setup, unbroken, tmp_path):
    store = ResumeStore(tmp_path / "resume", fingerprint("run", 1))
    with pytest.raises(Interrupted):
        run(setup, resume=store, on_epoch=interrupt_at(stop_at))
    assert checkpoint_files(tmp_path / "resume")  # epoch stop_at - 1's checkpoint (stop_at's was never written)

    seen = []
    resumed = run(setup, resume=ResumeStore(tmp_path / "resume", fingerprint("run", 1)), on_epoch=seen.append)
    assert resumed[0].resumed_from_epoch == stop_at - 1
    assert [r["epoch"] for r in seen] == list(range(stop_at, EPOCHS + 1))  # only the missing epochs ran
    assert_same_run(resumed, unbroken)


def test_a_race_rung_continued_from_its_checkpoint_equals_the_uninterrupted_run(setup, unbroken, tmp_path):
    """A race's first rung trains 1 epoch and stops, its checkpoint kept; the continuation to the full
    recipe (a later job, a fresh store object) is the uninterrupted run, tensor for tensor."""
    initial, train, validation = setup
    rung = train_classifier(copy.deepcopy(initial), train, validation, CFG, CPU,
                            resume=ResumeStore(tmp_path / "resume", fingerprint("run", 1)), stop_after_epoch=1)
    assert [r["epoch"] for r in rung.history] == [1] and rung.history == unbroken[0].history[:1]
    assert checkpoint_files(tmp_path / "resume")
    again = train_classifier(copy.deepcopy(initial), train, validation, CFG, CPU,  # the rung re-run: nothing to do
                             resume=ResumeStore(tmp_path / "resume", fingerprint("run", 1)), stop_after_epoch=1)
    assert again.history == rung.history and again.steps == 0
    seen = []
    continued = run(setup, resume=ResumeStore(tmp_path / "resume", fingerprint("run", 1)), on_epoch=seen.append)
    assert continued[0].resumed_from_epoch == 1 and [r["epoch"] for r in seen] == list(range(2, EPOCHS + 1))
    assert_same_run(continued, unbroken)


def test_a_first_rung_as_long_as_the_recipe_leaves_a_continuation_with_nothing_to_train(setup, unbroken, tmp_path):
    """race.first_epochs >= training.epochs: the rung trains the whole recipe and saves that last epoch too,
    so the surviving layer's run only restores it (no epoch trained twice) and equals the unbroken run."""
    initial, train, validation = setup
    rung = train_classifier(copy.deepcopy(initial), train, validation, CFG, CPU,
                            resume=ResumeStore(tmp_path / "resume", fingerprint("run", 1)), stop_after_epoch=EPOCHS)
    assert rung.history == unbroken[0].history
    seen = []
    continued = run(setup, resume=ResumeStore(tmp_path / "resume", fingerprint("run", 1)), on_epoch=seen.append)
    assert continued[0].resumed_from_epoch == EPOCHS and seen == [] and continued[0].steps == 0
    assert_same_run(continued, unbroken)


def test_the_last_epoch_is_not_checkpointed_and_clear_removes_the_store(setup, unbroken, tmp_path):
    store = ResumeStore(tmp_path / "resume", "fp")
    assert_same_run(run(setup, resume=store), unbroken)  # saving checkpoints does not change the run
    # the store holds the second-to-last epoch: a rerun redoes only the last one, and ends the same
    again = run(setup, resume=store)
    assert again[0].resumed_from_epoch == EPOCHS - 1
    assert_same_run(again, unbroken)
    store.clear()
    assert not (tmp_path / "resume").exists()
    result, _ = run(setup, resume=store)
    assert result.resumed_from_epoch == 0


@pytest.fixture
def interrupted_store(setup, tmp_path):
    """A store holding the checkpoint of epoch 1 of a run stopped in epoch 2."""
    store = ResumeStore(tmp_path / "resume", "settings-a")
    with pytest.raises(Interrupted):
        run(setup, resume=store, on_epoch=interrupt_at(2))
    return tmp_path / "resume"


def test_a_checkpoint_from_other_settings_is_ignored(setup, unbroken, interrupted_store, caplog):
    seen = []
    with caplog.at_level(logging.INFO, logger="pifi.resume"):
        result = run(setup, resume=ResumeStore(interrupted_store, "settings-b"), on_epoch=seen.append)
    assert result[0].resumed_from_epoch == 0
    assert [r["epoch"] for r in seen] == list(range(1, EPOCHS + 1))  # trained from the start
    assert_same_run(result, unbroken)
    assert "other settings" in caplog.text


def test_a_corrupted_tensor_file_is_ignored_with_a_warning(setup, unbroken, interrupted_store, caplog):
    tensor_files = list(interrupted_store.glob("*.safetensors"))
    assert tensor_files
    for path in tensor_files:
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF  # one flipped byte in the tensor data
        path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="pifi.resume"):
        result = run(setup, resume=ResumeStore(interrupted_store, "settings-a"))
    assert result[0].resumed_from_epoch == 0
    assert_same_run(result, unbroken)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("corrupt epoch checkpoint ignored; training restarts from epoch 1 (") for m in warnings)
    assert not any("delete it and rerun" in m for m in warnings)  # nothing for the user to do


def test_a_missing_tensor_file_means_training_from_the_start(setup, unbroken, interrupted_store):
    for path in interrupted_store.glob("*.safetensors"):
        path.unlink()
    result = run(setup, resume=ResumeStore(interrupted_store, "settings-a"))
    assert result[0].resumed_from_epoch == 0
    assert_same_run(result, unbroken)


@pytest.mark.parametrize("damage", ["truncated", "emptied"])
def test_every_damaged_checkpoint_file_is_ignored_with_a_warning(damage, setup, unbroken, interrupted_store, caplog):
    """Whatever the store's files are (tensors, a JSON state), a damaged one means: warn, train from the start."""
    files = checkpoint_files(interrupted_store)
    assert files
    for name, content in files.items():
        for other, other_content in files.items():  # the other files intact, this one damaged
            (interrupted_store / other).write_bytes(other_content)
        (interrupted_store / name).write_bytes(content[:len(content) // 2] if damage == "truncated" else b"")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pifi.resume"):
            result = run(setup, resume=ResumeStore(interrupted_store, "settings-a"))
        assert result[0].resumed_from_epoch == 0, name
        assert_same_run(result, unbroken)
        assert any(r.levelno == logging.WARNING for r in caplog.records), name


def test_a_kill_while_saving_never_mixes_two_epochs(setup, unbroken, tmp_path):
    """A kill while epoch 2's checkpoint is being written leaves some files of epoch 2 beside others of
    epoch 1 (when the store has more than one file: each is written atomically, but not all together).
    Resuming from such a mix would, e.g., train epoch 2 again on epoch 2's weights; whatever the store
    does with it, the run must end as an unbroken run does."""
    directory = tmp_path / "resume"
    store = ResumeStore(directory, "fp")
    epoch_one = {}

    def keep_epoch_one(record):
        if record["epoch"] == 2:  # epoch 1's checkpoint is on disk once its write is done, epoch 2's not yet
            store.wait()
            epoch_one.update(checkpoint_files(directory))
        if record["epoch"] == 3:
            raise Interrupted(3)

    with pytest.raises(Interrupted):
        run(setup, resume=store, on_epoch=keep_epoch_one)
    epoch_two = checkpoint_files(directory)
    assert epoch_one.keys() == epoch_two.keys() and epoch_one != epoch_two
    for name in epoch_one:  # this file still of epoch 1, the others already of epoch 2
        for other, content in epoch_two.items():
            (directory / other).write_bytes(content)
        (directory / name).write_bytes(epoch_one[name])
        assert_same_run(run(setup, resume=ResumeStore(directory, "fp")), unbroken)


def test_the_checkpoint_holds_the_epochs_state_although_training_goes_on_while_it_is_written(setup, tmp_path):
    """save() copies the state before the background write: weights changed right after it (as the next
    epoch does) do not reach the file, on the CPU too, where .cpu() alone would not copy."""
    initial, _, _ = setup
    model = copy.deepcopy(initial)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    state = EpochState(epoch=1, history=[{"epoch": 1}], best_epoch=1, best_accuracy=0.5)
    store = ResumeStore(tmp_path / "resume", "fp")
    saved = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    store.save(state, model, optimizer, torch.Generator().manual_seed(0), CPU)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)  # the next epoch, while the file may still be written
    store.wait()
    restored = copy.deepcopy(initial)
    fresh_optimizer = torch.optim.Adam([p for p in restored.parameters() if p.requires_grad])
    assert store.load(restored, fresh_optimizer, torch.Generator(), CPU).epoch == 1
    for key, value in restored.trainable_state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_a_failed_background_write_is_raised_not_lost(setup, tmp_path):
    initial, _, _ = setup
    model = copy.deepcopy(initial)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    (tmp_path / "resume").write_text("a file where the store's directory must go")
    store = ResumeStore(tmp_path / "resume", "fp")
    store.save(EpochState(epoch=1, history=[], best_epoch=1, best_accuracy=0.5), model, optimizer,
               torch.Generator(), CPU)  # returns at once; the write fails in the background
    with pytest.raises(OSError):
        store.wait()
    store.wait()  # reported once


# --- a real kill ----------------------------------------------------------------------------------------

TRAIN_SCRIPT = textwrap.dedent("""
    import json, os, random, signal, sys

    import pandas as pd
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from pifi.model import ModelSpec, build_classifier
    from pifi.resume import ResumeStore
    from pifi.tokens import TokenizedSplit
    from pifi.training import TrainingConfig, predict_proba, train_classifier

    bert_dir, store_dir, out_dir, mode = sys.argv[1:5]
    torch.set_num_threads(1)

    def frame(n, seed):
        rng = random.Random(seed)
        rows = []
        for i in range(n):
            words = rng.choices(["the", "film", "story", "was", "really", "plot", "very"], k=rng.randint(1, 6))
            words.insert(rng.randrange(len(words) + 1), "good" if i % 2 else "bad")
            rows.append((" ".join(words), i % 2))
        return pd.DataFrame(rows, columns=["text", "label"])

    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    train = TokenizedSplit.from_frame(tokenizer, frame(32, 0), 16)
    validation = TokenizedSplit.from_frame(tokenizer, frame(16, 1), 16)
    torch.manual_seed(0)
    model = build_classifier(ModelSpec(method="base", slm_path=bert_dir, num_labels=2, dropout=0.2))
    cfg = TrainingConfig(learning_rate=2e-3, batch_size=8, epochs=3, max_length=16, eval_batch_size=16, seed=5)

    store = ResumeStore(store_dir, "fp")

    def on_epoch(record):
        if mode == "kill" and record["epoch"] == 2:
            store.wait()  # epoch 1's checkpoint, written in the background
            assert os.listdir(store_dir)
            os.kill(os.getpid(), signal.SIGKILL)

    result = train_classifier(model, train, validation, cfg, torch.device("cpu"), resume=store, on_epoch=on_epoch)
    os.makedirs(out_dir)
    save_file({k: v.contiguous() for k, v in result.best_state.items()}, os.path.join(out_dir, "best.safetensors"))
    save_file({k: v.contiguous() for k, v in model.trainable_state_dict().items()},
              os.path.join(out_dir, "final.safetensors"))
    save_file({"probabilities": torch.from_numpy(predict_proba(model, validation, 16, torch.device("cpu")))},
              os.path.join(out_dir, "predictions.safetensors"))
    with open(os.path.join(out_dir, "result.json"), "w") as handle:
        json.dump({"history": result.history, "best_epoch": result.best_epoch,
                   "resumed_from_epoch": result.resumed_from_epoch}, handle)
""")


@pytest.mark.slow  # three Python processes that import torch: about 15-25 s on 2 CPUs
def test_a_killed_training_process_resumes_to_the_unbroken_result(tiny_bert_dir, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)

    def train(store: str, out: str, mode: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), str(tiny_bert_dir), str(tmp_path / store),
                               str(tmp_path / out), mode], capture_output=True, text=True, timeout=300)

    killed = train("store", "killed", "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "killed").exists()
    assert checkpoint_files(tmp_path / "store")  # epoch 1's checkpoint survived the kill

    resumed = train("store", "resumed", "run")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    unbroken = train("other_store", "unbroken", "run")
    assert unbroken.returncode == 0, unbroken.stderr[-3000:]

    resumed_result = json.loads((tmp_path / "resumed" / "result.json").read_text())
    unbroken_result = json.loads((tmp_path / "unbroken" / "result.json").read_text())
    assert resumed_result["resumed_from_epoch"] == 1 and unbroken_result["resumed_from_epoch"] == 0
    assert resumed_result["history"] == unbroken_result["history"]
    assert resumed_result["best_epoch"] == unbroken_result["best_epoch"]
    assert len({h["train_loss"] for h in unbroken_result["history"]}) == 3
    for name in ("best", "final", "predictions"):
        got, expected = (load_file(tmp_path / run_dir / f"{name}.safetensors") for run_dir in ("resumed", "unbroken"))
        assert got.keys() == expected.keys() and got
        for key, value in expected.items():
            assert torch.equal(got[key], value), (name, key)
    probabilities = load_file(tmp_path / "unbroken" / "predictions.safetensors")["probabilities"].numpy()
    assert probabilities.shape == (16, 2) and np.allclose(probabilities.sum(1), 1.0, atol=1e-5)
