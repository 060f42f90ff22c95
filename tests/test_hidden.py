"""Per-layer pooled hidden states of a decoder LLM (tiny random Llama)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pifi.artifacts import read_safetensors
from pifi.hidden import (ensure_pad_token, load_llm_for_states, load_states, masked_mean, pooled_layer_states,
                         save_states)

SHORT = "the film was dull."
LONG = ("honestly, the story felt wonderful from start to finish and i would say so again, "
        "if you ask me the cast is charming, the plot is gripping and the ending was beautiful.")
TEXTS = [
    "the plot was boring.",
    LONG,
    SHORT,
    "yesterday the chef baked fresh bread.",
    "i thought the soundtrack was superb and i would say so again.",
    "the referee missed a penalty.",
    "nobody could call the acting clumsy.",
]


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    model, tokenizer = load_llm_for_states(tiny_llama_dir, device=torch.device("cpu"))
    return model, tokenizer


# --- masked_mean ----------------------------------------------------------------------------------------

def _hidden_and_mask():
    torch.manual_seed(0)
    hidden = torch.randn(3, 6, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0]])
    return hidden, mask


def test_masked_mean_is_the_mean_over_unmasked_tokens():
    hidden, mask = _hidden_and_mask()
    pooled = masked_mean(hidden, mask)
    assert pooled.shape == (3, 5) and pooled.dtype == torch.float32
    torch.testing.assert_close(pooled[0], hidden[0].mean(0))
    torch.testing.assert_close(pooled[1], hidden[1, :3].mean(0))
    torch.testing.assert_close(pooled[2], hidden[2, 2:4].mean(0))


def test_masked_mean_ignores_values_at_masked_positions():
    hidden, mask = _hidden_and_mask()
    changed = hidden.clone()
    changed[mask == 0] = 1e6 * torch.randn(int((mask == 0).sum()), 5)
    assert torch.equal(masked_mean(hidden, mask), masked_mean(changed, mask))


def test_masked_mean_ignores_non_finite_values_at_masked_positions():
    hidden, mask = _hidden_and_mask()
    changed = hidden.clone()
    changed[1, 4] = float("nan")
    changed[2, 0] = float("inf")
    assert torch.equal(masked_mean(hidden, mask), masked_mean(changed, mask))


def test_masked_mean_of_an_empty_row_is_zero_not_nan():
    hidden = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    pooled = masked_mean(hidden, mask)
    assert torch.isfinite(pooled).all()
    assert torch.equal(pooled[1], torch.zeros(4))


def test_masked_mean_of_bf16_states_is_float32():
    hidden, mask = _hidden_and_mask()
    pooled = masked_mean(hidden.to(torch.bfloat16), mask)
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, masked_mean(hidden.to(torch.bfloat16).float(), mask))


# --- pooled_layer_states --------------------------------------------------------------------------------

def test_pooled_layer_states_shape(llama):
    model, tokenizer = llama
    states = pooled_layer_states(model, tokenizer, TEXTS, batch_size=3, progress=False)
    assert states.shape == (model.config.num_hidden_layers, len(TEXTS), model.config.hidden_size)
    assert states.dtype == torch.float32
    assert torch.isfinite(states).all()
    # the texts differ, so their states do too
    assert not torch.allclose(states[:, 0], states[:, 2])


def test_pooled_states_do_not_depend_on_padding(llama):
    model, tokenizer = llama
    alone = pooled_layer_states(model, tokenizer, [SHORT], progress=False)
    encoded = tokenizer([LONG, SHORT], padding=True)
    assert sum(encoded["attention_mask"][1]) < len(encoded["attention_mask"][1]) / 2  # SHORT is mostly padding
    batched = pooled_layer_states(model, tokenizer, [LONG, SHORT], batch_size=2, progress=False)
    torch.testing.assert_close(batched[:, 1], alone[:, 0], atol=1e-5, rtol=1e-5)


def test_pooled_states_do_not_depend_on_left_padding(llama):
    model, tokenizer = llama
    alone = pooled_layer_states(model, tokenizer, [SHORT], progress=False)
    tokenizer.padding_side = "left"
    try:
        batched = pooled_layer_states(model, tokenizer, [LONG, SHORT], batch_size=2, progress=False)
    finally:
        tokenizer.padding_side = "right"
    torch.testing.assert_close(batched[:, 1], alone[:, 0], atol=1e-5, rtol=1e-5)


def test_pooled_states_come_back_in_input_order(llama):
    model, tokenizer = llama
    one_by_one = torch.stack([pooled_layer_states(model, tokenizer, [t], progress=False)[:, 0] for t in TEXTS], dim=1)
    batched = pooled_layer_states(model, tokenizer, TEXTS, batch_size=2, progress=False)
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-5)
    reversed_batch = pooled_layer_states(model, tokenizer, TEXTS[::-1], batch_size=3, progress=False)
    torch.testing.assert_close(reversed_batch, one_by_one.flip(1), atol=1e-5, rtol=1e-5)


def test_layer_l_is_hidden_states_l_plus_one_pooled(llama):
    model, tokenizer = llama
    text = TEXTS[3]
    states = pooled_layer_states(model, tokenizer, [text], progress=False)
    encoded = tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**{k: encoded[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True).hidden_states
    assert len(hidden) == model.config.num_hidden_layers + 1
    for layer in range(model.config.num_hidden_layers):
        torch.testing.assert_close(states[layer, 0], hidden[layer + 1][0].mean(0), atol=1e-6, rtol=1e-6)
    # and not the embedding output
    assert not torch.allclose(states[0, 0], hidden[0][0].mean(0), atol=1e-3)


def test_pooled_states_respect_max_length(llama):
    model, tokenizer = llama
    truncated = pooled_layer_states(model, tokenizer, [LONG], max_length=8, progress=False)
    encoded = tokenizer([LONG], truncation=True, max_length=8, return_tensors="pt")
    assert encoded["input_ids"].shape[1] == 8
    with torch.no_grad():
        hidden = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                       output_hidden_states=True).hidden_states
    torch.testing.assert_close(truncated[0, 0], hidden[1][0].mean(0), atol=1e-6, rtol=1e-6)


# --- padding must not matter, with pad states that are not zero --------------------------------------------

@pytest.fixture(scope="module")
def llama_with_visible_padding(llama):
    """The tiny Llama with a random (non-zero) pad embedding.

    The tiny Llama's pad id is its embedding's padding_idx, so its pad embedding is zero, and with left padding
    every pad position's state stays exactly zero in every layer: a pooling that sums pad positions would not
    show. Here pad positions carry real, non-zero states, as they do in real LLMs whose pad token is eos.
    """
    import copy

    model, tokenizer = llama
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        embedding[tokenizer.pad_token_id] = torch.randn(embedding.shape[1], generator=generator)
    return model, tokenizer


def _pad_states(model, tokenizer, texts):
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**encoded, output_hidden_states=True).hidden_states[1:]
    pads = encoded["attention_mask"] == 0
    assert pads.any()
    return [h[pads] for h in hidden]


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_positions_have_non_zero_states(llama_with_visible_padding, side):
    """The guard that keeps the padding tests below sensitive: pad positions' states are not zero."""
    model, tokenizer = llama_with_visible_padding
    tokenizer.padding_side = side
    try:
        for layer_states in _pad_states(model, tokenizer, [LONG, SHORT]):
            assert layer_states.abs().amax(dim=-1).min() > 1e-3
    finally:
        tokenizer.padding_side = "right"


@pytest.mark.parametrize("side", ["right", "left"])
def test_batched_states_equal_one_by_one_states_with_non_zero_pad_states(llama_with_visible_padding, side):
    model, tokenizer = llama_with_visible_padding
    tokenizer.padding_side = side
    try:
        one_by_one = torch.stack([pooled_layer_states(model, tokenizer, [t], progress=False)[:, 0] for t in TEXTS],
                                 dim=1)
        batched = pooled_layer_states(model, tokenizer, TEXTS, batch_size=len(TEXTS), progress=False)
        pairs = pooled_layer_states(model, tokenizer, [LONG, SHORT], batch_size=2, progress=False)
    finally:
        tokenizer.padding_side = "right"
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pairs[:, 1], one_by_one[:, TEXTS.index(SHORT)], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pairs[:, 0], one_by_one[:, TEXTS.index(LONG)], atol=1e-5, rtol=1e-5)


def test_pooled_state_is_the_mean_over_real_tokens_of_a_padded_batch(llama_with_visible_padding):
    """Computed by hand from the model's own padded forward pass: pad positions never count."""
    model, tokenizer = llama_with_visible_padding
    tokenizer.padding_side = "left"
    try:
        states = pooled_layer_states(model, tokenizer, [LONG, SHORT], batch_size=2, progress=False)
        encoded = tokenizer([SHORT, LONG], padding=True, return_tensors="pt")  # the pooling's order: short first
    finally:
        tokenizer.padding_side = "right"
    with torch.no_grad():
        hidden = model(**encoded, output_hidden_states=True).hidden_states[1:]
    real = encoded["attention_mask"][0].bool()
    assert (~real).sum() > real.sum()  # SHORT is mostly padding
    for layer, h in enumerate(hidden):
        torch.testing.assert_close(states[layer, 1], h[0][real].mean(0), atol=1e-6, rtol=1e-6)
        assert not torch.allclose(states[layer, 1], h[0].mean(0), atol=1e-3)  # the mean over all positions differs


# --- ensure_pad_token -----------------------------------------------------------------------------------

def _word_tokenizer(**special_tokens):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "the": 1, "film": 2, "<unk>": 3, "</s>": 4, "<pad>": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special_tokens)


def test_ensure_pad_token_keeps_an_existing_pad_token():
    tokenizer = _word_tokenizer(pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id == 5


def test_ensure_pad_token_falls_back_to_eos():
    tokenizer = _word_tokenizer(eos_token="</s>")
    assert tokenizer.pad_token is None and tokenizer.unk_token is None
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token == "</s>" and tokenizer.pad_token_id == 4
    # eos wins over unk
    tokenizer = _word_tokenizer(eos_token="</s>", unk_token="<unk>")
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token_id == 4


def test_ensure_pad_token_without_eos_falls_back_to_unk():
    tokenizer = _word_tokenizer(unk_token="<unk>")
    assert tokenizer.pad_token is None and tokenizer.eos_token is None
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token == "<unk>" and tokenizer.pad_token_id == 3
    assert len(tokenizer) == 6  # a known token: the embedding matrix needs no new row


def test_ensure_pad_token_without_eos_or_unk_uses_the_token_of_id_0():
    tokenizer = _word_tokenizer()
    assert tokenizer.pad_token is None and tokenizer.eos_token is None and tokenizer.unk_token is None
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token == "<s>" and tokenizer.pad_token_id == 0
    assert len(tokenizer) == 6
    padded = tokenizer(["the film the", "film"], padding=True)
    assert padded["input_ids"][1] == [2, 0, 0] and padded["attention_mask"][1] == [1, 0, 0]


def test_load_llm_for_states_gives_a_tokenizer_without_pad_token_its_eos(tiny_llama_dir, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    path = tmp_path / "llama_without_pad"
    shutil.copytree(tiny_llama_dir, path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.pad_token = None
    tokenizer.eos_token = "[SEP]"
    tokenizer.save_pretrained(path)
    assert AutoTokenizer.from_pretrained(path).pad_token is None  # the saved tokenizer really has none
    model, loaded = load_llm_for_states(path, device=torch.device("cpu"))
    assert loaded.pad_token == "[SEP]" and loaded.pad_token_id == loaded.convert_tokens_to_ids("[SEP]")
    states = pooled_layer_states(model, loaded, [LONG, SHORT], batch_size=2, progress=False)  # padding works
    assert torch.isfinite(states).all()


def test_load_llm_for_states_sets_a_pad_token(tiny_llama_dir):
    model, tokenizer = load_llm_for_states(tiny_llama_dir, device=torch.device("cpu"))
    assert tokenizer.pad_token is not None
    assert next(model.parameters()).dtype == torch.float32
    assert not hasattr(model, "lm_head")  # the base model only


# --- artifacts ------------------------------------------------------------------------------------------

def test_save_and_load_states_round_trip(tmp_path):
    states = torch.randn(3, 5, 4, dtype=torch.float64)
    labels = [0, 1, 2, 1, 0]
    path = tmp_path / "hidden" / "states.safetensors"
    save_states(path, states, labels, metadata={"llm": "tiny", "dataset": "demo"})
    loaded, loaded_labels = load_states(path)
    assert isinstance(loaded, np.ndarray) and loaded.dtype == np.float32 and loaded.shape == (3, 5, 4)
    np.testing.assert_array_equal(loaded, states.to(torch.float32).numpy())
    np.testing.assert_array_equal(loaded_labels, np.array(labels))
    assert np.issubdtype(loaded_labels.dtype, np.integer)
    assert read_safetensors(path, framework="np")[1] == {"llm": "tiny", "dataset": "demo"}
    assert [p.name for p in path.parent.iterdir()] == ["states.safetensors"]  # no temporary file left


def test_saved_states_get_the_usual_file_permissions(tmp_path, umask_022):
    save_states(tmp_path / "states.safetensors", torch.zeros(1, 2, 3), [0, 1])
    (tmp_path / "plain.txt").write_text("x")
    plain_mode = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert plain_mode == 0o644
    assert (tmp_path / "states.safetensors").stat().st_mode & 0o777 == plain_mode
