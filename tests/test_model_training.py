"""The classifiers (base and PiFi), their checkpoints, and the fine-tuning loop, on tiny models."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from conftest import FILLER_WORDS, NEGATIVE_WORD, POSITIVE_WORD
from pifi.artifacts import write_safetensors
from pifi.model import FROZEN_PREFIX, ModelSpec, build_classifier, count_parameters, load_classifier
from pifi.training import TrainingConfig, encode_frame, make_loader, predict_proba, train_classifier

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

@pytest.mark.parametrize("method", ["base", "pifi_last"])
def test_load_classifier_round_trip(method, tmp_path, tiny_bert_dir, tiny_llama_dir, tokenizer):
    spec = spec_for(method, tiny_bert_dir, tiny_llama_dir, layer=2)
    torch.manual_seed(3)
    model = build_classifier(spec)
    with torch.no_grad():  # move every trainable weight away from what a fresh build would give
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "model.safetensors"
    write_safetensors(path, model.trainable_state_dict())
    loaded = load_classifier(spec, load_file(path))
    batch = model_inputs(batch_of(tokenizer, ["the film was good", "bad plot", "very quite the cast"]))
    model.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch), model(**batch), atol=1e-6, rtol=1e-6)
    fresh = build_classifier(spec, pretrained=False).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(**batch), model(**batch))


@pytest.fixture(scope="module")
def pifi_checkpoint(tiny_bert_dir, tiny_llama_dir):
    spec = spec_for("pifi_ilm", tiny_bert_dir, tiny_llama_dir)
    return spec, build_classifier(spec).trainable_state_dict()


def test_load_classifier_rejects_a_missing_tensor(pifi_checkpoint):
    spec, state = pifi_checkpoint
    state = dict(state)
    del state["head.3.weight"]
    with pytest.raises(ValueError, match=r"missing \['head\.3\.weight'\]"):
        load_classifier(spec, state)


def test_load_classifier_rejects_an_extra_tensor(pifi_checkpoint):
    spec, state = pifi_checkpoint
    state = {**state, "plug.layer.mlp.up_proj.weight": torch.zeros(96, 48)}
    with pytest.raises(ValueError, match=r"unexpected \['plug\.layer\.mlp\.up_proj\.weight'\]"):
        load_classifier(spec, state)


def test_load_classifier_rejects_a_misshaped_tensor(pifi_checkpoint):
    spec, state = pifi_checkpoint
    state = {**state, "to_llm.weight": torch.zeros(SLM_HIDDEN, SLM_HIDDEN)}
    with pytest.raises(ValueError, match=r"to_llm\.weight has shape \(32, 32\), model expects \(48, 32\)"):
        load_classifier(spec, state)


def test_load_classifier_rejects_a_base_checkpoint_for_pifi(tiny_bert_dir, tiny_llama_dir):
    base_state = build_classifier(spec_for("base", tiny_bert_dir, tiny_llama_dir)).trainable_state_dict()
    with pytest.raises(ValueError, match="missing.*from_llm.weight"):
        load_classifier(spec_for("pifi_ilm", tiny_bert_dir, tiny_llama_dir), base_state)


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
        result = train_classifier(model, tokenizer, train, validation, cfg, torch.device("cpu"),
                                  on_epoch=records.append, progress=False)
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
    assert {"validation_macro_f1", "validation_mcc", "train_loss", "seconds"} <= set(history[0])
    assert result.train_seconds > 0


def test_best_state_is_the_best_epochs_weights(trained, tokenizer):
    result, spec, validation = trained["result"], trained["spec"], trained["validation"]
    assert not any(k.startswith(FROZEN_PREFIX) for k in result.best_state)
    assert all(t.device.type == "cpu" for t in result.best_state.values())
    model = load_classifier(spec, result.best_state)
    loader = make_loader(tokenizer, encode_frame(tokenizer, validation, 16), 32, shuffle=False)
    probabilities = predict_proba(model, loader, torch.device("cpu"))
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
    first = train_classifier(model, tokenizer, train, validation, cfg, torch.device("cpu"), progress=False)
    second = train_classifier(twin, tokenizer, train, validation, cfg, torch.device("cpu"), progress=False)
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in second.history]
    assert all(torch.equal(first.best_state[k], second.best_state[k]) for k in first.best_state)
