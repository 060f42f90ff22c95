"""Shared fixtures for the library's unit tests: tiny random-weight models saved with save_pretrained.

Everything is built from configs (no model hub) once per test session, under pytest's tmp dir.
Fixtures only: no autouse hooks, so other test modules are not affected.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Words of the separable toy task used by the training tests (must be in the tiny tokenizer's vocab).
POSITIVE_WORD, NEGATIVE_WORD = "good", "bad"
FILLER_WORDS = ["the", "film", "story", "was", "really", "quite", "cast", "plot", "very", "and"]
# A fixed corpus for the tiny word tokenizer (not the demo data, which may change): its vocabulary, and so
# the tiny models' shapes and random weights, stay the same from run to run.
VOCABULARY_TEXTS = [
    " ".join([POSITIVE_WORD, NEGATIVE_WORD, *FILLER_WORDS]),
    "honestly, the story felt wonderful from start to finish and i would say so again.",
    "if you ask me the cast is charming, the plot is gripping and the ending was beautiful.",
    "the film was dull. the plot was boring. nobody could call the acting clumsy.",
    "i thought the soundtrack was superb. yesterday the chef baked fresh bread.",
    "the referee missed a penalty. the researchers measured the particle's mass.",
]


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A 2-layer BERT (hidden 32) and a 3-layer Llama (hidden 48, GQA 4/2 heads) sharing a word tokenizer."""
    from tiny_project import write_tiny_models

    torch.manual_seed(1234)
    return write_tiny_models(tmp_path_factory.mktemp("tiny"), VOCABULARY_TEXTS)


@pytest.fixture(scope="session")
def tiny_bert_dir(tiny_models) -> Path:
    return tiny_models["tiny_bert"]


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_models) -> Path:
    return tiny_models["tiny_llama"]


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory) -> Path:
    """A 3-layer Qwen2 (hidden 32, GQA 4/2 heads, biased q/k/v projections), one safetensors file."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(4321)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64))
    # Random biases (they are zero-initialised), so that a missing bias would show in the outputs.
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("qwen2") / "tiny_qwen2"
    model.save_pretrained(path)
    return path


@pytest.fixture
def umask_022(monkeypatch):
    """The usual umask for one test: set for the process and for pifi.artifacts, which learns it once
    at import (it never toggles the process's umask while other threads write)."""
    import pifi.artifacts

    previous = os.umask(0o022)
    monkeypatch.setattr(pifi.artifacts, "_UMASK", 0o022)
    yield
    os.umask(previous)
