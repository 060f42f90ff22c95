"""The classifiers (base and PiFi), their checkpoints, and the fine-tuning loop, on tiny models."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from conftest import FILLER_WORDS, NEGATIVE_WORD, POSITIVE_WORD
from pifi.artifacts import write_safetensors
from pifi.model import FROZEN_PREFIX, ModelSpec, build_classifier, count_parameters
from pifi.tokens import TokenizedSplit
from pifi.training import TrainingConfig, predict_proba, train_classifier

SLM_HIDDEN, LLM_HIDDEN = 32, 48  # the tiny BERT and tiny Llama of conftest.py
EPOCHS = 8


def separable_frame(n: int, seed: int, prefix: str) -> pd.DataFrame:
    """One keyword decides the class: POSITIVE_WORD -> 1, NEGATIVE_WORD -> 0, among filler words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER_WORDS, 3)
        words.insert(rng.randrange(4), POSITIVE_WORD if label else NEGATIVE_WORD)
        rows.append((f"{prefix}-{i:06d}", " ".join(words), label))
    return pd.DataFrame(rows, columns=["row_id", "text", "label"])


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    assert tok.unk_token_id not in tok(f"{POSITIVE_WORD} {NEGATIVE_WORD}")["input_ids"]
    return tok


def spec_for(method: str, bert_dir, llama_dir, *, num_labels: int = 2, layer: int = 1, dropout: float = 0.2):
    if method == "base":
        return ModelSpec(method="base", slm_path=str(bert_dir), num_labels=num_labels, dropout=dropout)
    return ModelSpec(method=method, slm_path=str(bert_dir), num_labels=num_labels, dropout=dropout,
                     llm_path=str(llama_dir), llm_layer=layer)


def split(tokenizer, frame: pd.DataFrame, max_length: int = 16) -> TokenizedSplit:
    return TokenizedSplit.from_frame(tokenizer, frame, max_length)


def batch_of(tokenizer, texts):
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


def model_inputs(batch):
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}


# --- the model ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["base", "pifi_ilm"])
def test_forward_shapes(method, tiny_bert_dir, tiny_llama_dir, tokenizer):
    model = build_classifier(spec_for(method, tiny_bert_dir, tiny_llama_dir, num_labels=3))
    model.eval()
    batch = batch_of(tokenizer, ["the film was good", "bad", "the plot and the cast were very bad indeed"])
    with torch.no_grad():
        logits = model(**model_inputs(batch))
    assert logits.shape == (3, 3)
    assert torch.isfinite(logits).all()
    if method == "base":
        assert model.plug is None and not hasattr(model, "to_llm")
    else:
        assert model.to_llm.weight.shape == (LLM_HIDDEN, SLM_HIDDEN) and model.to_llm.bias is None
        assert model.from_llm.weight.shape == (SLM_HIDDEN, LLM_HIDDEN) and model.from_llm.bias is None
    assert model.encoder.pooler is None  # PiFi reads the CLS state; no unused pooler


def test_pifi_routes_the_cls_state_through_the_plugged_layer(tiny_bert_dir, tiny_llama_dir, tokenizer):
    model = build_classifier(spec_for("pifi_ilm", tiny_bert_dir, tiny_llama_dir)).eval()
    batch = model_inputs(batch_of(tokenizer, ["the film was good", "the plot was bad"]))
    with torch.no_grad():
        cls = model.encoder(**batch).last_hidden_state[:, 0]
        expected = model.head(model.from_llm(model.plug(model.to_llm(cls))))
        torch.testing.assert_close(model(**batch), expected)
        # the plugged layer is really used: changing its weights changes the logits
        before = model(**batch)
        model.plug.layer.mlp.down_proj.weight.mul_(3.0)
        assert not torch.allclose(model(**batch), before)


def test_frozen_layer_gets_no_gradient(tiny_bert_dir, tiny_llama_dir, tokenizer):
    model = build_classifier(spec_for("pifi_ilm", tiny_bert_dir, tiny_llama_dir))
    model.train()
    assert not model.plug.training
    batch = model_inputs(batch_of(tokenizer, ["the film was good", "the plot was bad"]))
    loss = torch.nn.functional.cross_entropy(model(**batch), torch.tensor([1, 0]))
    loss.backward()
    plug_params = list(model.plug.parameters())
    assert plug_params and all(p.grad is None and not p.requires_grad for p in plug_params)
    assert model.to_llm.weight.grad is not None and model.to_llm.weight.grad.abs().sum() > 0
    assert model.from_llm.weight.grad.abs().sum() > 0
    assert model.encoder.embeddings.word_embeddings.weight.grad is not None


def test_trainable_state_dict_excludes_the_frozen_layer(tiny_bert_dir, tiny_llama_dir):
    model = build_classifier(spec_for("pifi_ilm", tiny_bert_dir, tiny_llama_dir))
    full, trainable = model.state_dict(), model.trainable_state_dict()
    plug_keys = {k for k in full if k.startswith(FROZEN_PREFIX)}
    assert plug_keys  # the full state dict does hold the layer
    assert not any(k.startswith(FROZEN_PREFIX) for k in trainable)
    assert set(trainable) == set(full) - plug_keys
    assert {"to_llm.weight", "from_llm.weight", "head.0.weight", "head.3.weight"} <= set(trainable)


def test_count_parameters(tiny_bert_dir, tiny_llama_dir):
    base = build_classifier(spec_for("base", tiny_bert_dir, tiny_llama_dir))
    pifi = build_classifier(spec_for("pifi_ilm", tiny_bert_dir, tiny_llama_dir))
    base_counts, pifi_counts = count_parameters(base), count_parameters(pifi)
    plug = sum(p.numel() for p in pifi.plug.parameters())
    assert base_counts["trainable_params"] == base_counts["total_params"] == sum(p.numel() for p in base.parameters())
    assert pifi_counts["total_params"] - pifi_counts["trainable_params"] == plug
    assert pifi_counts["trainable_params"] - base_counts["trainable_params"] == 2 * SLM_HIDDEN * LLM_HIDDEN
    # one Llama decoder layer: q, o (48x48), k, v (48x24 with 2 of 4 heads), gate, up, down (48x96), two norms
    assert plug == 2 * 48 * 48 + 2 * 48 * 24 + 3 * 48 * 96 + 2 * 48


# --- checkpoints ----------------------------------------------------------------------------------------

def rebuilt(spec: ModelSpec, state: dict[str, torch.Tensor]):
    """A classifier rebuilt from its spec and a training checkpoint, which must hold every trainable tensor."""
    model = build_classifier(spec, pretrained=False)
    assert set(state) == set(model.trainable_state_dict())
    model.load_state_dict(state, strict=False)
    return model


@pytest.mark.parametrize("method", ["base", "pifi_last"])
def test_a_checkpoint_rebuilds_the_trained_classifier(method, tmp_path, tiny_bert_dir, tiny_llama_dir, tokenizer):
    spec = spec_for(method, tiny_bert_dir, tiny_llama_dir, layer=2)
    torch.manual_seed(3)
    model = build_classifier(spec)
    with torch.no_grad():  # move every trainable weight away from what a fresh build would give
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "model.safetensors"
    write_safetensors(path, model.trainable_state_dict())
    loaded = rebuilt(spec, load_file(path))
    batch = model_inputs(batch_of(tokenizer, ["the film was good", "bad plot", "very quite the cast"]))
    model.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch), model(**batch), atol=1e-6, rtol=1e-6)
    fresh = build_classifier(spec, pretrained=False).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(**batch), model(**batch))


# --- training -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tiny_bert_dir, tiny_llama_dir, tokenizer):
    """One PiFi run on the separable task, recording what the optimizer was given."""
    spec = spec_for("pifi_ilm", tiny_bert_dir, tiny_llama_dir, dropout=0.0)
    torch.manual_seed(0)
    model = build_classifier(spec)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimized: list[torch.Tensor] = []
    original_adam = torch.optim.Adam

    class RecordingAdam(original_adam):
        def __init__(self, params, *args, **kwargs):
            params = list(params)
            optimized.extend(params)
            super().__init__(params, *args, **kwargs)

    train, validation = separable_frame(64, 0, "train"), separable_frame(32, 1, "validation")
    cfg = TrainingConfig(learning_rate=1e-3, batch_size=8, epochs=EPOCHS, max_length=16, eval_batch_size=32, seed=0)
    records = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim, "Adam", RecordingAdam)
        result = train_classifier(model, split(tokenizer, train), split(tokenizer, validation), cfg,
                                  torch.device("cpu"), on_epoch=records.append)
    return dict(spec=spec, model=model, before=before, optimized=optimized, result=result, records=records,
                validation=validation)


def test_training_lowers_the_loss_and_learns_the_task(trained):
    history = trained["result"].history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["validation_accuracy"] for h in history) >= 0.9
    assert all(np.isfinite(h["train_loss"]) for h in history)


def test_history_and_best_epoch(trained):
    result = trained["result"]
    history = result.history
    assert len(history) == EPOCHS
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert trained["records"] == history  # on_epoch saw every record
    accuracies = [h["validation_accuracy"] for h in history]
    assert result.best_epoch == int(np.argmax(accuracies)) + 1  # the first epoch with the best accuracy
    assert {"validation_macro_f1", "validation_mcc", "train_loss"} <= set(history[0])
    assert result.train_seconds > 0


def test_best_state_is_the_best_epochs_weights(trained, tokenizer):
    result, spec, validation = trained["result"], trained["spec"], trained["validation"]
    assert not any(k.startswith(FROZEN_PREFIX) for k in result.best_state)
    assert all(t.device.type == "cpu" for t in result.best_state.values())
    model = rebuilt(spec, result.best_state)
    probabilities = predict_proba(model, split(tokenizer, validation), 32, torch.device("cpu"))
    assert probabilities.shape == (len(validation), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float((probabilities.argmax(axis=1) == validation["label"].to_numpy()).mean())
    assert accuracy == pytest.approx(result.history[result.best_epoch - 1]["validation_accuracy"], abs=1e-6)


def test_frozen_layer_is_not_trained_nor_optimized(trained):
    model, before, optimized = trained["model"], trained["before"], trained["optimized"]
    after = model.state_dict()
    plug_keys = [k for k in after if k.startswith(FROZEN_PREFIX)]
    assert plug_keys
    for key in plug_keys:
        assert torch.equal(after[key], before[key]), key
    for key in ("to_llm.weight", "from_llm.weight", "head.0.weight", "encoder.embeddings.word_embeddings.weight"):
        assert not torch.equal(after[key], before[key]), key
    optimized_ids = {id(p) for p in optimized}
    assert optimized_ids
    assert not optimized_ids & {id(p) for p in model.plug.parameters()}
    assert optimized_ids == {id(p) for p in model.parameters() if p.requires_grad}


def test_training_is_reproducible_from_the_same_initial_weights(tiny_bert_dir, tiny_llama_dir, tokenizer):
    """train_classifier seeds data order and dropout itself: same start + same seed -> same run.
    (The initial head weights come from the caller's RNG state: seed before build_classifier.)"""
    import copy

    model = build_classifier(spec_for("base", tiny_bert_dir, tiny_llama_dir))
    twin = copy.deepcopy(model)
    train, validation = separable_frame(32, 5, "train"), separable_frame(16, 6, "validation")
    cfg = TrainingConfig(learning_rate=1e-3, batch_size=8, epochs=2, max_length=16, seed=11)
    first = train_classifier(model, split(tokenizer, train), split(tokenizer, validation), cfg, torch.device("cpu"))
    second = train_classifier(twin, split(tokenizer, train), split(tokenizer, validation), cfg, torch.device("cpu"))
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in second.history]
    assert all(torch.equal(first.best_state[k], second.best_state[k]) for k in first.best_state)


# --- what the loop computes: clipping, train/eval modes, label smoothing ---------------------------------

CPU = torch.device("cpu")


def base_model(tiny_bert_dir, tiny_llama_dir, *, seed: int = 0, method: str = "base", dropout: float = 0.2):
    torch.manual_seed(seed)
    return build_classifier(spec_for(method, tiny_bert_dir, tiny_llama_dir, dropout=dropout))


def largest_change(model, before: dict[str, torch.Tensor]) -> float:
    after = model.trainable_state_dict()
    return max(float((after[k].float() - v.float()).abs().max()) for k, v in before.items() if v.is_floating_point())


def test_gradient_clipping_limits_the_update(tiny_bert_dir, tiny_llama_dir, tokenizer):
    """With Adam, a gradient clipped to norm 1e-12 is far below eps (1e-8): the weights barely move.
    Without clipping (or with a clip of 5) Adam moves every weight with a gradient by about the learning rate."""
    import copy

    model = base_model(tiny_bert_dir, tiny_llama_dir)
    tightly_clipped = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    train, validation = split(tokenizer, separable_frame(32, 2, "train")), split(tokenizer, separable_frame(8, 3, "v"))
    cfg = TrainingConfig(learning_rate=1e-3, batch_size=8, epochs=1, max_length=16, seed=0)
    train_classifier(model, train, validation, cfg, CPU)
    train_classifier(tightly_clipped, train, validation,
                     replace(cfg, grad_clip=1e-12), CPU)
    assert largest_change(model, before) > 1e-3  # 4 Adam steps of about 1e-3 each
    assert largest_change(tightly_clipped, before) < 1e-6  # at most lr * 1e-12 / 1e-8 per step


def test_every_training_step_runs_in_train_mode_and_validation_in_eval_mode(tiny_bert_dir, tiny_llama_dir,
                                                                           tokenizer):
    """Validation leaves the model in eval mode: each epoch must put it back into train mode."""
    model = base_model(tiny_bert_dir, tiny_llama_dir, method="pifi_ilm")
    calls: list[tuple[int, bool, bool, bool, bool]] = []
    epoch = [1]

    def record(module, args, output):
        calls.append((epoch[0], torch.is_grad_enabled(), module.training, model.encoder.training, model.plug.training))

    model.head[1].register_forward_hook(record)  # the head's Dropout
    train, validation = split(tokenizer, separable_frame(16, 2, "train")), split(tokenizer, separable_frame(8, 3, "v"))
    cfg = TrainingConfig(learning_rate=1e-3, batch_size=8, epochs=3, max_length=16, eval_batch_size=4, seed=0)
    train_classifier(model, train, validation, cfg, CPU, on_epoch=lambda record: epoch.__setitem__(0, epoch[0] + 1))
    training_calls = [c for c in calls if c[1]]
    validation_calls = [c for c in calls if not c[1]]
    assert [c[0] for c in training_calls] == [1, 1, 2, 2, 3, 3]  # two steps per epoch
    assert [c[0] for c in validation_calls] == [1, 1, 2, 2, 3, 3]  # two validation batches per epoch
    assert all(head and encoder for _, _, head, encoder, _ in training_calls), training_calls
    assert not any(head or encoder for _, _, head, encoder, _ in validation_calls), validation_calls
    assert not any(plug for *_, plug in calls)  # the frozen layer never trains, not even its dropout


def first_step_logits(model):
    """Record the logits and input ids of every forward call made with grad enabled (the training steps)."""
    seen = []

    def record(module, args, kwargs, output):
        if torch.is_grad_enabled():
            seen.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone(), output.detach().clone()))

    model.register_forward_hook(record, with_kwargs=True)
    return seen


def confident_model(tiny_bert_dir, tiny_llama_dir):
    """A model that predicts class 1 with a margin of about 8 from the start.

    Smoothing by eps adds eps/2 * (mean margin of the true class) to a binary loss, which is about zero for
    a fresh model on balanced labels; with this model and mostly_positive labels it is large.
    """
    model = base_model(tiny_bert_dir, tiny_llama_dir)
    with torch.no_grad():
        model.head[3].bias.copy_(torch.tensor([-4.0, 4.0]))
    return model


def mostly_positive(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(label=[0 if i % 4 == 0 else 1 for i in range(len(frame))])


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_the_training_loss_is_label_smoothed_cross_entropy(smoothing, tiny_bert_dir, tiny_llama_dir, tokenizer):
    """One batch holds the whole training set, so the epoch's train_loss is that step's loss."""
    import torch.nn.functional as F

    model = confident_model(tiny_bert_dir, tiny_llama_dir)
    steps = first_step_logits(model)
    frame = mostly_positive(separable_frame(16, 4, "train"))
    train = split(tokenizer, frame)
    cfg = TrainingConfig(learning_rate=1e-3, batch_size=16, epochs=1, max_length=16, label_smoothing=smoothing,
                         seed=3)
    result = train_classifier(model, train, split(tokenizer, separable_frame(8, 3, "v")), cfg, CPU)
    assert len(steps) == 1
    input_ids, attention_mask, logits = steps[0]
    # the label of each row of the batch, found from its tokens (the batch is in shuffled order)
    label_of = {tuple(train.input_ids[i, :train.lengths[i]].tolist()): int(train.labels[i]) for i in range(len(train))}
    labels = torch.tensor([label_of[tuple(ids[mask.bool()].tolist())] for ids, mask in zip(input_ids, attention_mask)])
    assert sorted(labels.tolist()) == sorted(frame["label"].tolist())
    expected = F.cross_entropy(logits, labels, label_smoothing=smoothing).item()
    other = F.cross_entropy(logits, labels, label_smoothing=0.3 - smoothing).item()
    assert abs(expected - other) > 0.05  # the two smoothings give distinguishable losses on this batch
    assert result.history[0]["train_loss"] == pytest.approx(expected, abs=2e-6)


def test_label_smoothing_changes_the_run(tiny_bert_dir, tiny_llama_dir, tokenizer):
    import copy

    model = confident_model(tiny_bert_dir, tiny_llama_dir)
    twin = copy.deepcopy(model)
    train = split(tokenizer, mostly_positive(separable_frame(32, 2, "train")))
    validation = split(tokenizer, separable_frame(8, 3, "v"))
    cfg = TrainingConfig(learning_rate=1e-3, batch_size=8, epochs=1, max_length=16, label_smoothing=0.0, seed=0)
    plain = train_classifier(model, train, validation, cfg, CPU)
    smoothed = train_classifier(twin, train, validation, replace(cfg, label_smoothing=0.5),
                                CPU)
    assert abs(plain.history[0]["train_loss"] - smoothed.history[0]["train_loss"]) > 0.05


# --- TrainingConfig.from_config ------------------------------------------------------------------------

def test_training_config_from_config_section():
    section = {"epochs": 7, "batch_size": 16, "eval_batch_size": 48, "learning_rate": 2e-5, "max_length": 64,
               "label_smoothing": 0.1, "grad_clip": 1.0, "compile": True,
               # keys that belong to other parts of the pipeline
               "dropout": 0.3, "max_train_samples": 100, "max_eval_samples": 50, "seed": 99}
    cfg = TrainingConfig.from_config(section, seed=5)
    assert cfg == TrainingConfig(learning_rate=2e-5, batch_size=16, epochs=7, max_length=64, label_smoothing=0.1,
                                 grad_clip=1.0, eval_batch_size=48, compile=True, seed=5)
    assert not hasattr(cfg, "dropout") and not hasattr(cfg, "max_train_samples")


def test_training_config_from_config_keeps_defaults_for_missing_keys():
    cfg = TrainingConfig.from_config({"epochs": 2, "compile": False}, seed=1)
    assert cfg == TrainingConfig(epochs=2, compile=False, seed=1)
    assert (cfg.learning_rate, cfg.batch_size, cfg.max_length, cfg.label_smoothing, cfg.grad_clip) == (
        5e-5, 32, 100, 0.05, 5.0)
    assert TrainingConfig.from_config({}, seed=0).compile == "auto"


# --- the bucketed data path against today's DataLoader loop --------------------------------------------

def reference_training(model, tokenizer, train_frame: pd.DataFrame, validation_frame: pd.DataFrame,
                       cfg: TrainingConfig) -> list[tuple[float, float]]:
    """The loop as it was before token caching: tokenize per frame, a shuffling DataLoader seeded with cfg.seed,
    each batch padded to its own longest row by ``tokenizer.pad``. Returns (train loss, validation accuracy)."""
    from torch.utils.data import DataLoader

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    def rows(frame):
        encoded = tokenizer(frame["text"].tolist(), truncation=True, max_length=cfg.max_length)
        return [{**{k: encoded[k][i] for k in encoded}, "labels": int(frame["label"].iloc[i])}
                for i in range(len(frame))]

    def loader(frame, batch_size, shuffle):
        return DataLoader(rows(frame), batch_size=batch_size, shuffle=shuffle,
                          collate_fn=lambda batch: tokenizer.pad(batch, return_tensors="pt"),
                          generator=torch.Generator().manual_seed(cfg.seed))

    train_loader = loader(train_frame, cfg.batch_size, True)
    validation_loader = loader(validation_frame, cfg.eval_batch_size, False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate)
    history = []
    for _ in range(cfg.epochs):
        model.train()
        losses = []
        for batch in train_loader:
            labels = batch.pop("labels")
            loss = torch.nn.functional.cross_entropy(model(**batch).float(), labels,
                                                     label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        correct = 0
        with torch.inference_mode():
            for batch in validation_loader:
                labels = batch.pop("labels")
                correct += int((model(**batch).argmax(-1) == labels).sum())
        history.append((float(np.mean(losses)), correct / len(validation_frame)))
    return history


def varied_frame(n: int, seed: int, prefix: str) -> pd.DataFrame:
    """Like separable_frame, with 1 to 40 filler words: rows fall into different length buckets."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.choices(FILLER_WORDS, k=rng.choice([1, 2, 5, 9, 20, 40]))
        words.insert(rng.randrange(len(words) + 1), POSITIVE_WORD if label else NEGATIVE_WORD)
        rows.append((f"{prefix}-{i:06d}", " ".join(words), label))
    return pd.DataFrame(rows, columns=["row_id", "text", "label"])


def assert_same_trajectory(result, reference, rel=1e-5):
    losses = [h["train_loss"] for h in result.history]
    assert losses == pytest.approx([loss for loss, _ in reference], rel=rel, abs=2e-6)
    assert [h["validation_accuracy"] for h in result.history] == pytest.approx([acc for _, acc in reference])


def test_bucketed_loop_equals_the_dataloader_loop_with_every_dropout_on(tiny_bert_dir, tiny_llama_dir, tokenizer):
    """Rows of one length and max_length equal to it: both loops pad to the same width, so even the encoder's
    dropout masks match. Same sample order, same dropout draws, same optimizer, clip and smoothing."""
    import copy

    model = base_model(tiny_bert_dir, tiny_llama_dir, method="pifi_ilm", seed=1)
    twin = copy.deepcopy(model)
    train_frame, validation_frame = separable_frame(40, 7, "train"), separable_frame(24, 8, "validation")
    cfg = TrainingConfig(learning_rate=1e-3, batch_size=8, epochs=2, max_length=6, eval_batch_size=16,
                         label_smoothing=0.1, grad_clip=0.5, seed=4)
    assert set(tokenizer(train_frame["text"].tolist(), return_length=True)["length"]) == {6}
    result = train_classifier(model, split(tokenizer, train_frame, 6), split(tokenizer, validation_frame, 6), cfg, CPU)
    reference = reference_training(twin, tokenizer, train_frame, validation_frame, cfg)
    assert_same_trajectory(result, reference)
    for key, value in model.trainable_state_dict().items():
        torch.testing.assert_close(value, twin.trainable_state_dict()[key], rtol=1e-4, atol=1e-5)


def test_bucketed_loop_equals_the_dataloader_loop_with_mixed_lengths(tiny_bert_dir, tiny_llama_dir, tokenizer):
    """Rows of many lengths, padded to buckets (32, 64) instead of each batch's longest row: the mask hides the
    padding, so the results match. The encoder's dropout is off (its masks' shapes follow the padded width);
    the head's dropout stays on."""
    import copy

    model = base_model(tiny_bert_dir, tiny_llama_dir, seed=2, dropout=0.3)
    for module in model.encoder.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    twin = copy.deepcopy(model)
    train_frame, validation_frame = varied_frame(32, 9, "train"), varied_frame(16, 10, "validation")
    lengths = tokenizer(train_frame["text"].tolist(), return_length=True)["length"]
    assert min(lengths) < 10 and 32 < max(lengths) <= 64  # both buckets are used
    cfg = TrainingConfig(learning_rate=1e-3, batch_size=8, epochs=2, max_length=64, eval_batch_size=16, seed=6)
    result = train_classifier(model, split(tokenizer, train_frame, 64), split(tokenizer, validation_frame, 64), cfg,
                              CPU)
    reference = reference_training(twin, tokenizer, train_frame, validation_frame, cfg)
    assert_same_trajectory(result, reference)


# --- the compile switch ---------------------------------------------------------------------------------

def test_compile_switch(monkeypatch, tiny_bert_dir, tiny_llama_dir, tokenizer):
    """compile=auto compiles on CUDA only; True compiles on CPU too; False never."""
    import pifi.training as training

    cuda, enough = torch.device("cuda"), training.AUTO_COMPILE_MIN_STEPS
    assert training.compile_wanted("auto", cuda) is True and training.compile_wanted("auto", cuda, enough) is True
    assert training.compile_wanted("auto", cuda, enough - 1) is False  # a short run: compiling costs more than it saves
    assert training.compile_wanted("auto", CPU) is False and training.compile_wanted("auto", CPU, 10 * enough) is False
    assert training.compile_wanted(True, cuda, 1) is True
    assert training.compile_wanted(True, CPU) is True and training.compile_wanted(False, torch.device("cuda")) is False
    compiled_models = []
    monkeypatch.setattr(training, "compiled", lambda model, device: compiled_models.append(model) or model)
    train, validation = split(tokenizer, separable_frame(8, 2, "train")), split(tokenizer, separable_frame(4, 3, "v"))
    for setting, expected in (("auto", 0), (False, 0), (True, 1)):
        model = base_model(tiny_bert_dir, tiny_llama_dir)
        compiled_models.clear()
        train_classifier(model, train, validation, TrainingConfig(epochs=1, batch_size=8, max_length=16,
                                                                  compile=setting), CPU)
        assert len(compiled_models) == expected and all(m is model for m in compiled_models), setting


def test_only_full_training_batches_take_the_compiled_step(monkeypatch, tiny_bert_dir, tiny_llama_dir, tokenizer):
    """One compiled graph per bucket: the last, partial batch and validation run eager on the same modules,
    and the run is the one an uncompiled loop gives."""
    import copy

    import pifi.training as training

    class Recorder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.batch_sizes = inner, []

        def forward(self, **inputs):
            self.batch_sizes.append((self.training, len(inputs["input_ids"])))
            return self.inner(**inputs)

    recorders = []
    monkeypatch.setattr(training, "compiled", lambda model, device: recorders.append(Recorder(model)) or recorders[-1])
    model = base_model(tiny_bert_dir, tiny_llama_dir, seed=4)
    twin = copy.deepcopy(model)
    train, validation = split(tokenizer, separable_frame(20, 2, "train")), split(tokenizer, separable_frame(12, 3, "v"))
    cfg = TrainingConfig(learning_rate=1e-3, batch_size=8, epochs=2, max_length=16, eval_batch_size=8, seed=1)
    with_step = train_classifier(model, train, validation, replace(cfg, compile=True), CPU)
    plain = train_classifier(twin, train, validation, replace(cfg, compile=False), CPU)
    assert recorders[0].batch_sizes == [(True, 8)] * 4  # 20 rows: 2 full batches an epoch, the 4 left run eager
    assert with_step.compiled and not plain.compiled
    assert (with_step.steps, with_step.samples) == (plain.steps, plain.samples) == (6, 40)
    assert with_step.history == plain.history
    for key, value in plain.best_state.items():
        torch.testing.assert_close(with_step.best_state[key], value, rtol=0, atol=0)


def _compile_usable() -> str | None:
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(3))
    except Exception as error:  # noqa: BLE001 - any failure means: no working compiler here
        return f"torch.compile is not usable on this machine ({type(error).__name__}: {error})"
    return None


@pytest.mark.slow
def test_compiled_training_gives_the_eager_trajectory(monkeypatch, tiny_bert_dir, tiny_llama_dir, tokenizer):
    """Compiled on CPU (inductor), the same run as eager. Inductor draws dropout masks from its own generator,
    not eager's: ``fallback_random`` makes it use eager's, so the runs can be compared with dropout on."""
    import copy

    import torch._inductor.config

    if (reason := _compile_usable()) is not None:
        pytest.skip(reason + "; the bucketed-loop tests cover the eager path")
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    torch._dynamo.reset()
    model = base_model(tiny_bert_dir, tiny_llama_dir, seed=3)
    twin = copy.deepcopy(model)
    train, validation = split(tokenizer, separable_frame(32, 2, "train")), split(tokenizer, separable_frame(16, 3, "v"))
    cfg = TrainingConfig(learning_rate=1e-3, batch_size=16, epochs=2, max_length=16, eval_batch_size=16, seed=0)
    eager = train_classifier(model, train, validation, replace(cfg, compile=False), CPU)
    from torch._dynamo.utils import counters

    counters.clear()
    compiled = train_classifier(twin, train, validation, replace(cfg, compile=True), CPU)
    assert counters["stats"]["unique_graphs"] >= 1  # it really compiled (the training step; validation runs eager)
    assert [h["train_loss"] for h in compiled.history] == pytest.approx(
        [h["train_loss"] for h in eager.history], rel=1e-4)
    assert [h["validation_accuracy"] for h in compiled.history] == [h["validation_accuracy"] for h in eager.history]
    for key, value in eager.best_state.items():
        torch.testing.assert_close(compiled.best_state[key], value, rtol=1e-3, atol=1e-4)
