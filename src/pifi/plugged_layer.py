"""One frozen LLM decoder layer, built from the LLM's config and only that layer's tensors.

Loading a whole LLM to keep one layer would cost 494M parameters for Qwen2-0.5B (8B for
Llama-3.1-8B) against 15M (218M) for the layer. Instead the layer's class is found on a
meta-device skeleton of the model (no memory), built empty, and filled from safetensors with
``safe_open``, reading only the tensors whose names belong to that layer.
"""

from __future__ import annotations

import copy
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


def _tensor_files(model_dir: Path) -> dict[str, Path]:
    """Every tensor name of the checkpoint and the file that holds it (from the headers: nothing is loaded)."""
    files: dict[str, Path] = {}
    for path in _weight_files(model_dir):
        with safe_open(str(path), framework="pt") as handle:
            files.update(dict.fromkeys(handle.keys(), path))
    return files


def _read_tensors(chosen: dict[str, tuple[Path, str]]) -> dict[str, torch.Tensor]:
    """Read ``{key: (file, name)}`` as ``{key: tensor}``, opening each file once."""
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted({path for path, _ in chosen.values()}):
        with safe_open(str(path), framework="pt") as handle:
            for key, (file, name) in chosen.items():
                if file == path:
                    tensors[key] = handle.get_tensor(name)
    return tensors


def _layer_tensor_names(files: dict[str, Path], layer: int, expected: set[str] | None,
                        where: object) -> tuple[str, dict[str, tuple[Path, str]]]:
    """The name prefix of decoder layer ``layer`` (e.g. ``model.``) and its tensors: ``{relative: (file, name)}``."""
    pattern = re.compile(rf"^(.*\.)?layers\.{layer}\.(.+)$")  # never matches "layers.13." for layer 1
    groups: dict[str, dict[str, tuple[Path, str]]] = {}
    for name, path in files.items():
        match = pattern.match(name)
        if match:
            groups.setdefault(match.group(1) or "", {})[match.group(2)] = (path, name)
    if not groups:
        raise PluggedLayerError(f"no tensors for decoder layer {layer} in {where}")
    if expected is not None:
        fitting = [prefix for prefix, names in groups.items() if set(names) == expected]
        if len(fitting) != 1:
            raise PluggedLayerError(
                f"decoder layer {layer} of {where}: expected tensors {sorted(expected)}; "
                f"found groups {({p or '<root>': sorted(n) for p, n in groups.items()})}")
        return fitting[0], groups[fitting[0]]
    if len(groups) == 1:
        return next(iter(groups.items()))
    raise PluggedLayerError(f"several modules have a layer {layer} in {where}: "
                            f"{sorted(groups)}; pass the expected tensor names")


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


class DecoderCheckpoint:
    """A decoder LLM's safetensors checkpoint, read one module at a time.

    The module classes come from a meta-device skeleton of the model (no memory); each module is
    built empty and filled with its own tensors only (read by name with ``safe_open``), in any dtype.
    This is what lets a pass over the LLM hold one decoder layer at a time (``pifi.hidden``).
    """

    def __init__(self, model_dir: str | Path, *, trust_remote_code: bool = False,
                 attn_implementation: str = "sdpa"):
        self.model_dir = Path(model_dir)
        self.config = text_config(self.model_dir, trust_remote_code=trust_remote_code)
        # A layer built by hand needs the attention backend set on its config.
        self.config._attn_implementation = attn_implementation
        with torch.device("meta"):
            self.skeleton = AutoModel.from_config(self.config, trust_remote_code=trust_remote_code)
        if not isinstance(getattr(self.skeleton, "layers", None), nn.ModuleList):
            raise PluggedLayerError(f"{type(self.skeleton).__name__} has no decoder `layers`; "
                                    "this architecture is not supported")
        self.num_layers: int = self.config.num_hidden_layers
        self._files: dict[str, Path] | None = None
        self._prefix: str | None = None

    @property
    def files(self) -> dict[str, Path]:
        if self._files is None:
            self._files = _tensor_files(self.model_dir)
        return self._files

    def _check_range(self, layer: int) -> None:
        if not 0 <= layer < self.num_layers:
            raise PluggedLayerError(f"layer {layer} is out of range: {self.model_dir.name} has {self.num_layers} "
                                    f"decoder layers (valid indices 0..{self.num_layers - 1})")

    def _layer_names(self, layer: int) -> tuple[str, dict[str, tuple[Path, str]], nn.Module]:
        self._check_range(layer)
        with torch.device("meta"):
            block = type(self.skeleton.layers[layer])(self.config, layer)
        prefix, chosen = _layer_tensor_names(self.files, layer, set(block.state_dict()), self.model_dir)
        return prefix, chosen, block

    @property
    def prefix(self) -> str:
        """The name prefix of the language model's modules (``model.``, ``""``, ``model.language_model.``)."""
        if self._prefix is None:
            self._prefix = self._layer_names(0)[0]
        return self._prefix

    def layer(self, layer: int, *, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> nn.Module:
        """Decoder layer ``layer`` in ``dtype`` on ``device``, frozen and in eval mode, from its own tensors
        alone (moved in the stored dtype, then cast there: a bf16 checkpoint crosses to a GPU at half size)."""
        _, chosen, block = self._layer_names(layer)
        return _filled(block, _read_tensors(chosen), dtype, f"layer {layer} tensor", device)

    def module(self, name: str, *, dtype: torch.dtype | None = None) -> nn.Module:
        """The skeleton's top-level module ``name`` (``embed_tokens``, ``norm``) filled from the checkpoint;
        ``dtype=None`` keeps the stored dtype (an embedding lookup is exact in any dtype, so the
        vocabulary matrix need not be cast whole)."""
        # A copy: filling the skeleton's own module would keep its tensors alive as long as the skeleton.
        block = copy.deepcopy(getattr(self.skeleton, name))
        chosen: dict[str, tuple[Path, str]] = {}
        for key in block.state_dict():
            full = f"{self.prefix}{name}.{key}"
            if full not in self.files and name == "embed_tokens" and getattr(self.config, "tie_word_embeddings", False):
                full = "lm_head." + key  # tied weights saved under the head's name
            if full not in self.files:
                raise PluggedLayerError(f"{self.model_dir} has no tensor {full!r}")
            chosen[key] = (self.files[full], full)
        return _filled(block, _read_tensors(chosen), dtype, f"{name} tensor")

    def rotary_emb(self) -> nn.Module | None:
        """The model's rotary embedding, built from the config (its buffers are computed, not stored)."""
        return type(self.skeleton.rotary_emb)(self.config) if hasattr(self.skeleton, "rotary_emb") else None


def _filled(block: nn.Module, tensors: dict[str, torch.Tensor], dtype: torch.dtype | None, what: str,
            device: torch.device | str = "cpu") -> nn.Module:
    """``block`` (on the meta device) with ``tensors`` assigned after a shape check, frozen and in eval mode."""
    expected = block.state_dict()
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise PluggedLayerError(f"{what} {name}: checkpoint shape {tuple(tensor.shape)} "
                                    f"!= model shape {tuple(expected[name].shape)}")
    # Casting is exact the same wherever it happens (bf16 -> fp32 widens; fp32 -> bf16 rounds to nearest even).
    block.load_state_dict({name: t.to(device) if dtype is None else t.to(device).to(dtype)
                           for name, t in tensors.items()}, assign=True)
    block.requires_grad_(False)
    return block.eval()


def build_plugged_layer(model_dir: str | Path, layer: int, *, trust_remote_code: bool = False,
                        attn_implementation: str = "sdpa") -> PluggedDecoderLayer:
    """Build decoder layer ``layer`` of the LLM in ``model_dir``, frozen, from its tensors alone."""
    checkpoint = DecoderCheckpoint(model_dir, trust_remote_code=trust_remote_code,
                                   attn_implementation=attn_implementation)
    return plugged_layer_from(checkpoint, layer)


def plugged_layer_from(checkpoint: DecoderCheckpoint, layer: int) -> PluggedDecoderLayer:
    """Decoder layer ``layer`` of an opened checkpoint, frozen, in float32: for callers that plug many
    layers of one LLM in turn (the config, skeleton and tensor index are read once)."""
    plugged = PluggedDecoderLayer(checkpoint.layer(layer, dtype=torch.float32), checkpoint.rotary_emb())
    plugged.requires_grad_(False)
    plugged.eval()
    return plugged
