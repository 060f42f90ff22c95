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
