"""One frozen LLM decoder layer built from the config and that layer's tensors alone."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModel, LlamaConfig, LlamaForCausalLM

import pifi.plugged_layer as plugged_layer
from pifi.plugged_layer import PluggedLayerError, build_plugged_layer


def _reference_layer_output(full_model, layer: int, x: torch.Tensor) -> torch.Tensor:
    """The model's own decoder layer (loaded with the whole model) on a length-1 sequence at position 0."""
    hidden = x.unsqueeze(1)
    positions = torch.zeros(x.shape[0], 1, dtype=torch.long)
    with torch.no_grad():
        out = full_model.layers[layer](hidden, attention_mask=None, position_ids=positions,
                                       position_embeddings=full_model.rotary_emb(hidden, positions))
    out = out[0] if isinstance(out, tuple) else out
    return out[:, 0]


def _length_one_formula(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """docs/design.md: x + o_proj(v_proj(norm(x))) then the MLP block (v heads repeated for grouped-query attention)."""
    attn = block.self_attn
    config = attn.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    groups = config.num_attention_heads // config.num_key_value_heads
    v = attn.v_proj(block.input_layernorm(x))
    v = v.view(x.shape[0], config.num_key_value_heads, head_dim).repeat_interleave(groups, dim=1)
    h = x + attn.o_proj(v.reshape(x.shape[0], -1))
    return h + block.mlp(block.post_attention_layernorm(h))


class SafeOpenSpy:
    """Stands in for safetensors.safe_open and records every tensor name read."""

    def __init__(self):
        self.read: list[str] = []
        self.opened: list[str] = []

    def __call__(self, path, framework="pt", device="cpu"):
        from safetensors import safe_open

        spy = self
        spy.opened.append(str(path))

        class Handle:
            def __enter__(self):
                self._cm = safe_open(path, framework=framework, device=device)
                self._handle = self._cm.__enter__()
                return self

            def __exit__(self, *exc):
                return self._cm.__exit__(*exc)

            def keys(self):
                return self._handle.keys()

            def metadata(self):
                return self._handle.metadata()

            def get_tensor(self, name):
                spy.read.append(name)
                return self._handle.get_tensor(name)

            def get_slice(self, name):
                spy.read.append(name)
                return self._handle.get_slice(name)

        return Handle()


def _saved_llama(tmp_path_factory, name: str, seed: int, save_kwargs: dict | None = None, **config) -> Path:
    torch.manual_seed(seed)
    path = tmp_path_factory.mktemp(name) / "llama"
    LlamaForCausalLM(LlamaConfig(**config)).save_pretrained(path, **(save_kwargs or {}))
    return path


@pytest.fixture(scope="module")
def sharded_llama_dir(tmp_path_factory):
    return _saved_llama(tmp_path_factory, "sharded", 7, {"max_shard_size": "20KB"}, vocab_size=64, hidden_size=32,
                        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                        max_position_embeddings=64)


@pytest.fixture(scope="module")
def deep_llama_dir(tmp_path_factory):
    """14 decoder layers (hidden 8), so that layer 1's name prefix is also a prefix of layer 13's."""
    return _saved_llama(tmp_path_factory, "deep", 8, vocab_size=16, hidden_size=8, num_hidden_layers=14,
                        num_attention_heads=2, num_key_value_heads=1, intermediate_size=16,
                        max_position_embeddings=32)


MODEL_DIRS = ["tiny_llama_dir", "tiny_qwen2_dir"]


@pytest.mark.parametrize("model_fixture", MODEL_DIRS)
def test_plugged_layer_equals_the_models_own_layer(request, model_fixture):
    model_dir = request.getfixturevalue(model_fixture)
    full = AutoModel.from_pretrained(model_dir)
    torch.manual_seed(0)
    x = torch.randn(6, full.config.hidden_size)
    for layer in range(full.config.num_hidden_layers):
        plugged = build_plugged_layer(model_dir, layer)
        with torch.no_grad():
            out = plugged(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out, _reference_layer_output(full, layer, x), atol=1e-5, rtol=1e-5)
    # different layers really are different (the test would not notice a wrong layer otherwise)
    with torch.no_grad():
        assert not torch.allclose(build_plugged_layer(model_dir, 0)(x), build_plugged_layer(model_dir, 1)(x))


@pytest.mark.parametrize("model_fixture", MODEL_DIRS)
def test_plugged_layer_reduces_to_v_o_and_mlp_on_one_token(request, model_fixture):
    model_dir = request.getfixturevalue(model_fixture)
    plugged = build_plugged_layer(model_dir, 1)
    torch.manual_seed(1)
    x = torch.randn(5, plugged.layer.self_attn.config.hidden_size)
    with torch.no_grad():
        out = plugged(x)
        torch.testing.assert_close(out, _length_one_formula(plugged.layer, x), atol=1e-5, rtol=1e-5)
        # q_proj and k_proj do not matter on a length-1 sequence
        plugged.layer.self_attn.q_proj.weight.normal_()
        plugged.layer.self_attn.k_proj.weight.normal_()
        torch.testing.assert_close(plugged(x), out, atol=1e-5, rtol=1e-5)


def test_eager_and_sdpa_agree(tiny_llama_dir):
    torch.manual_seed(2)
    x = torch.randn(4, 48)
    with torch.no_grad():
        sdpa = build_plugged_layer(tiny_llama_dir, 2, attn_implementation="sdpa")(x)
        eager = build_plugged_layer(tiny_llama_dir, 2, attn_implementation="eager")(x)
    torch.testing.assert_close(sdpa, eager, atol=1e-5, rtol=1e-5)


def test_plugged_layer_is_frozen_but_passes_gradients(tiny_llama_dir):
    plugged = build_plugged_layer(tiny_llama_dir, 1)
    params = list(plugged.parameters())
    assert params and all(not p.requires_grad for p in params)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)
    parent = nn.Sequential(nn.Linear(48, 48), plugged)
    parent.train()
    assert parent[0].training
    assert not plugged.training
    assert all(not m.training for m in plugged.modules())
    # gradients flow through the frozen layer to what feeds it
    x = torch.randn(3, 48, requires_grad=True)
    parent(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in params)


def _layer_names(read: list[str], layer: int) -> list[str]:
    pattern = re.compile(rf"(^|\.)layers\.{layer}\.")
    return [name for name in read if not pattern.search(name)]


def test_building_reads_only_the_chosen_layers_tensors(monkeypatch, tiny_llama_dir):
    spy = SafeOpenSpy()
    monkeypatch.setattr(plugged_layer, "safe_open", spy)
    plugged = build_plugged_layer(tiny_llama_dir, 1)
    assert spy.read, "the spy saw no reads: is safe_open still how layers are read?"
    assert _layer_names(spy.read, 1) == []
    assert len(spy.read) == len(plugged.layer.state_dict())


def test_sharded_checkpoint_reads_only_the_chosen_layer(monkeypatch, sharded_llama_dir):
    index = json.loads((sharded_llama_dir / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2  # really sharded
    full = AutoModel.from_pretrained(sharded_llama_dir)
    spy = SafeOpenSpy()
    monkeypatch.setattr(plugged_layer, "safe_open", spy)
    plugged = build_plugged_layer(sharded_llama_dir, 2)
    assert spy.read and _layer_names(spy.read, 2) == []
    assert sorted(spy.read) == sorted(n for n in index["weight_map"] if n.startswith("model.layers.2."))
    x = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(plugged(x), _reference_layer_output(full, 2, x), atol=1e-5, rtol=1e-5)


def test_layer_1_never_reads_layer_13(monkeypatch, deep_llama_dir):
    full = AutoModel.from_pretrained(deep_llama_dir)
    spy = SafeOpenSpy()
    monkeypatch.setattr(plugged_layer, "safe_open", spy)
    one = build_plugged_layer(deep_llama_dir, 1)
    assert spy.read and _layer_names(spy.read, 1) == []
    assert not any("layers.1" in name and "layers.1." not in name for name in spy.read)
    torch.testing.assert_close(one.layer.mlp.up_proj.weight, full.layers[1].mlp.up_proj.weight)
    assert not torch.equal(one.layer.mlp.up_proj.weight, full.layers[13].mlp.up_proj.weight)
    thirteen = build_plugged_layer(deep_llama_dir, 13)
    torch.testing.assert_close(thirteen.layer.mlp.up_proj.weight, full.layers[13].mlp.up_proj.weight)
    x = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(one(x), _reference_layer_output(full, 1, x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(thirteen(x), _reference_layer_output(full, 13, x), atol=1e-5, rtol=1e-5)


def test_a_plugged_layer_holds_exactly_its_decoder_layers_tensors(deep_llama_dir):
    expected = AutoModel.from_pretrained(deep_llama_dir).layers[1].state_dict()
    tensors = build_plugged_layer(deep_llama_dir, 1).layer.state_dict()
    assert sorted(tensors) == sorted(expected) and len(tensors) == 9  # q, k, v, o, gate, up, down, two norms
    for name, tensor in expected.items():
        torch.testing.assert_close(tensors[name], tensor)


@pytest.mark.parametrize("layer", [3, 17, -1])
def test_layer_out_of_range_names_the_depth(tiny_llama_dir, layer):
    with pytest.raises(PluggedLayerError, match=r"has 3 decoder layers.*0\.\.2"):
        build_plugged_layer(tiny_llama_dir, layer)


def test_directory_without_safetensors_is_refused(tmp_path, tiny_llama_dir):
    (tmp_path / "config.json").write_text((tiny_llama_dir / "config.json").read_text())
    with pytest.raises(PluggedLayerError, match="no safetensors"):
        build_plugged_layer(tmp_path, 0)


def test_misshaped_layer_tensor_is_refused(tmp_path, tiny_llama_dir):
    """A config that does not match the weights: the error names the tensor and both shapes."""
    import shutil

    target = tmp_path / "llama"
    shutil.copytree(tiny_llama_dir, target)
    config = json.loads((target / "config.json").read_text())
    config["intermediate_size"] = 80
    (target / "config.json").write_text(json.dumps(config))
    with pytest.raises(PluggedLayerError, match=r"tensor mlp\.\w+_proj\.weight: checkpoint shape "
                                                r"\((?:96, 48|48, 96)\) != model shape \((?:80, 48|48, 80)\)"):
        build_plugged_layer(target, 0)


def test_multimodal_checkpoint_takes_the_language_models_layer(tmp_path):
    from safetensors import safe_open
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(9)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       image_size=16, patch_size=8),
        text_config=LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                num_key_value_heads=2, intermediate_size=64),
        image_token_index=5)
    LlavaForConditionalGeneration(config).save_pretrained(tmp_path / "llava")
    with safe_open(str(tmp_path / "llava" / "model.safetensors"), framework="pt") as handle:
        [name] = [n for n in handle.keys() if re.search(r"language_model\..*layers\.1\.self_attn\.q_proj\.weight$", n)]
        expected = handle.get_tensor(name)
    plugged = build_plugged_layer(tmp_path / "llava", 1)
    torch.testing.assert_close(plugged.layer.self_attn.q_proj.weight, expected)
