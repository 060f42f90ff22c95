"""One frozen LLM decoder layer, built from the LLM's config and only that layer's tensors.

Loading a whole LLM to keep one layer would cost 494M parameters for Qwen2-0.5B (8B for
Llama-3.1-8B) against 15M (218M) for the layer. Instead the layer's class is found on a
meta-device skeleton of the model (no memory), built empty, and filled from safetensors with
``safe_open``, reading only the tensors whose names belong to that layer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModel


class PluggedLayerError(ValueError):
    """The requested layer cannot be built from the checkpoint."""


def _weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / name for name in names]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise PluggedLayerError(f"{model_dir} has no safetensors weights")
    return files


def read_layer_tensors(model_dir: str | Path, layer: int,
                       expected: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Read the tensors of decoder layer ``layer`` (names relative to the layer) and nothing else.

    Checkpoints name them ``model.layers.3.mlp.up_proj.weight`` or ``layers.3...``; a multimodal
    checkpoint also has e.g. ``vision_tower.encoder.layers.3...``. Names are grouped by the prefix
    before ``layers.{layer}.`` and, given ``expected`` (the layer's own state-dict names), the one
    group that matches it is read; names are listed from the headers, so nothing else is loaded.
    """
    pattern = re.compile(rf"^(.*\.)?layers\.{layer}\.(.+)$")  # never matches "layers.13." for layer 1
    groups: dict[str, dict[str, tuple[Path, str]]] = {}
    for path in _weight_files(Path(model_dir)):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                match = pattern.match(name)
                if match:
                    groups.setdefault(match.group(1) or "", {})[match.group(2)] = (path, name)
    if not groups:
        raise PluggedLayerError(f"no tensors for decoder layer {layer} in {model_dir}")
    if expected is not None:
        fitting = [prefix for prefix, names in groups.items() if set(names) == expected]
        if len(fitting) != 1:
            raise PluggedLayerError(
                f"decoder layer {layer} of {model_dir}: expected tensors {sorted(expected)}; "
                f"found groups {({p or '<root>': sorted(n) for p, n in groups.items()})}")
        chosen = groups[fitting[0]]
    elif len(groups) == 1:
        chosen = next(iter(groups.values()))
    else:
        raise PluggedLayerError(f"several modules have a layer {layer} in {model_dir}: "
                                f"{sorted(groups)}; pass the expected tensor names")
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted({path for path, _ in chosen.values()}):
        with safe_open(str(path), framework="pt") as handle:
            for relative, (file, name) in chosen.items():
                if file == path:
                    tensors[relative] = handle.get_tensor(name)
    return tensors


class PluggedDecoderLayer(nn.Module):
    """Run one decoder layer on a length-1 sequence at position 0: B x H in, B x H out."""

    def __init__(self, layer: nn.Module, rotary_emb: nn.Module | None):
        super().__init__()
        self.layer = layer
        self.rotary_emb = rotary_emb

    def train(self, mode: bool = True) -> "PluggedDecoderLayer":
        # Frozen means frozen: no attention dropout even while the model around it trains.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = x.unsqueeze(1)
        positions = torch.zeros(x.shape[0], 1, dtype=torch.long, device=x.device)
        # An explicit all-visible additive mask: with None, sdpa would apply a causal mask and
        # eager none; both agree on a length-1 sequence, but only by accident.
        mask = torch.zeros(x.shape[0], 1, 1, 1, dtype=hidden.dtype, device=x.device)
        kwargs = {"attention_mask": mask, "position_ids": positions}
        if self.rotary_emb is not None:
            kwargs["position_embeddings"] = self.rotary_emb(hidden, positions)
        out = self.layer(hidden, **kwargs)
        if isinstance(out, tuple):  # older layer classes return (hidden, ...)
            out = out[0]
        return out[:, 0]


def text_config(model_dir: str | Path, *, trust_remote_code: bool = False):
    """The language model's config (the ``text_config`` of a multimodal checkpoint)."""
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    return getattr(config, "text_config", None) or config


def build_plugged_layer(model_dir: str | Path, layer: int, *, trust_remote_code: bool = False,
                        attn_implementation: str = "sdpa") -> PluggedDecoderLayer:
    """Build decoder layer ``layer`` of the LLM in ``model_dir``, frozen, from its tensors alone."""
    model_dir = Path(model_dir)
    config = text_config(model_dir, trust_remote_code=trust_remote_code)
    depth = config.num_hidden_layers
    if not 0 <= layer < depth:
        raise PluggedLayerError(f"layer {layer} is out of range: {model_dir.name} has {depth} decoder layers "
                                f"(valid indices 0..{depth - 1})")
    # A layer built by hand needs the attention backend set on its config.
    config._attn_implementation = attn_implementation
    with torch.device("meta"):
        skeleton = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    layers = getattr(skeleton, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise PluggedLayerError(f"{type(skeleton).__name__} has no decoder `layers`; this architecture is not supported")
    with torch.device("meta"):
        block = type(layers[layer])(config, layer)
    expected = block.state_dict()
    tensors = read_layer_tensors(model_dir, layer, set(expected))
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise PluggedLayerError(f"layer {layer} tensor {name}: checkpoint shape {tuple(tensor.shape)} "
                                    f"!= model shape {tuple(expected[name].shape)}")
    block.load_state_dict({name: t.to(torch.float32) for name, t in tensors.items()}, assign=True)
    rotary = type(skeleton.rotary_emb)(config) if hasattr(skeleton, "rotary_emb") else None
    plugged = PluggedDecoderLayer(block, rotary)
    plugged.requires_grad_(False)
    plugged.eval()
    return plugged
