"""plugin_probe: score each LLM layer the way PiFi uses it.

PiFi feeds the frozen layer one token, the SLM's CLS vector through ``Linear(d_slm -> d_llm)``; on a
length-1 sequence the layer is a fixed operator (value/output projection plus MLP) on a learned
projection. Selectors that read the LLM's hidden states on text measure what the residual stream
encodes, not what the layer does to that projection. This probe measures the latter: for each layer,
PiFi's own plug-in and head (``to_llm`` -> frozen layer -> ``from_llm`` -> Linear -> Dropout -> GELU ->
Linear) are trained on frozen SLM CLS vectors of the selection rows with the training recipe's Adam,
label smoothing, dropout and gradient clipping, and the layer is scored by held-out accuracy
(stratified k-fold), averaged over a few initialisations.

Speed: the folds x inits models of one layer train together. Their plug-in and head weights are
stacked (one batched matmul each) and the frozen layer, shared by all of them, runs once on all
their rows. Adam is elementwise, so a stacked parameter is exactly M independent optimizers;
gradients are clipped per model, as each training run would. Only one layer's weights are in memory
at a time, built from its own tensors as the training jobs build it (``pifi.plugged_layer``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold
from torch import nn
from torch.nn import functional as F

from pifi.plugged_layer import DecoderCheckpoint, PluggedDecoderLayer, plugged_layer_from

__all__ = ["cls_vectors", "score_plugged_layers", "plugged_layer_accuracy"]

# ``settings`` below is the selector's PluginProbeParams (declared with it, pifi/selectors/plugin_probe.py,
# which calls this module): folds, inits, epochs, batch_size, learning_rate, label_smoothing, dropout,
# grad_clip, seed, score.


def _linear_weight(fan_in: int, fan_out: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear's own initialisation (kaiming-uniform weight, uniform bias), as in_features x out_features."""
    weight = torch.empty(fan_out, fan_in)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    bound = 1 / math.sqrt(fan_in)
    bias = torch.empty(fan_out).uniform_(-bound, bound, generator=generator)
    return weight.T.contiguous(), bias


class _StackedPlugins(nn.Module):
    """M independent copies of PiFi's plug-in and head, as stacked weights: M x B x d_slm in, M x B x C out."""

    def __init__(self, models: int, d_slm: int, d_llm: int, num_labels: int, dropout: float, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        shapes = {"to_llm": (d_slm, d_llm), "from_llm": (d_llm, d_slm), "hidden": (d_slm, d_slm),
                  "out": (d_slm, num_labels)}
        stacks: dict[str, list[torch.Tensor]] = {name: [] for name in ("to_llm", "from_llm", "hidden", "hidden_bias",
                                                                       "out", "out_bias")}
        for _ in range(models):
            for name, (fan_in, fan_out) in shapes.items():
                weight, bias = _linear_weight(fan_in, fan_out, generator)
                stacks[name].append(weight)
                if name in ("hidden", "out"):  # PiFi's projections have no bias, its head does
                    stacks[f"{name}_bias"].append(bias.unsqueeze(0))
        for name, tensors in stacks.items():
            setattr(self, name, nn.Parameter(torch.stack(tensors)))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, plug: PluggedDecoderLayer) -> torch.Tensor:
        models, batch, _ = x.shape
        h = torch.bmm(x, self.to_llm)
        # The frozen layer is the same for every model: one pass over all their rows.
        h = plug(h.reshape(models * batch, -1)).reshape(models, batch, -1)
        h = torch.bmm(h, self.from_llm)
        h = torch.baddbmm(self.hidden_bias, h, self.hidden)
        h = F.gelu(F.dropout(h, self.dropout, self.training))
        return torch.baddbmm(self.out_bias, h, self.out)

    @torch.no_grad()
    def clip_per_model(self, max_norm: float) -> None:
        """clip_grad_norm_ of each model on its own: a model's step never depends on another's gradients."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        squared = torch.stack([g.pow(2).flatten(1).sum(dim=1) for g in grads]).sum(dim=0)
        scale = (max_norm / (squared.sqrt() + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))


def _fold_rows(labels: np.ndarray, params: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out rows) per model: the k stratified folds, repeated for each initialisation."""
    folds = list(StratifiedKFold(params.folds, shuffle=True, random_state=params.seed).split(labels, labels))
    return [fold for _ in range(params.inits) for fold in folds]


def plugged_layer_accuracy(features: torch.Tensor, labels: torch.Tensor, plug: PluggedDecoderLayer,
                           d_llm: int, params: Any, *, device: torch.device | str = "cpu",
                           ) -> dict[str, list[float]]:
    """Train the folds x inits plug-ins on one layer; their held-out accuracies and losses (one per model)."""
    device = torch.device(device)
    features, labels = features.to(device, torch.float32), labels.to(device)
    num_labels = int(labels.max()) + 1
    models = _fold_rows(labels.cpu().numpy(), params)
    torch.manual_seed(params.seed)  # dropout masks: the same for every layer, so layers compete on equal terms
    stack = _StackedPlugins(len(models), features.shape[1], d_llm, num_labels, params.dropout, params.seed).to(device)
    optimizer = torch.optim.Adam(stack.parameters(), lr=params.learning_rate)
    train_rows = [torch.as_tensor(train, device=device) for train, _ in models]
    batch = min(params.batch_size, min(len(rows) for rows in train_rows))
    steps = min(len(rows) for rows in train_rows) // batch  # equal steps per model; each epoch reshuffles
    generator = torch.Generator().manual_seed(params.seed)
    stack.train()
    for _ in range(params.epochs):
        orders = [rows[torch.randperm(len(rows), generator=generator).to(device)] for rows in train_rows]
        for step in range(steps):
            index = torch.stack([order[step * batch:(step + 1) * batch] for order in orders])  # M x B
            logits = stack(features[index], plug)
            # Mean over each model's batch, summed over models: every model gets its own run's gradient.
            loss = F.cross_entropy(logits.flatten(0, 1), labels[index].flatten(),
                                   label_smoothing=params.label_smoothing) * len(models)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            stack.clip_per_model(params.grad_clip)
            optimizer.step()
    stack.eval()
    # Held-out folds differ in size by at most one row: pad each to the longest, score only real rows.
    width = max(len(held_out) for _, held_out in models)
    index = torch.stack([torch.as_tensor(np.resize(held_out, width), device=device) for _, held_out in models])
    real = torch.stack([torch.arange(width, device=device) < len(held_out) for _, held_out in models])
    with torch.no_grad():
        logits = stack(features[index], plug)
        correct = (logits.argmax(dim=2) == labels[index]) & real
        nll = F.cross_entropy(logits.flatten(0, 1), labels[index].flatten(), reduction="none").view(real.shape)
        counts = real.sum(dim=1)
        accuracy = (correct.sum(dim=1) / counts).tolist()
        loss = ((nll * real).sum(dim=1) / counts).tolist()
    return {"accuracy": [float(a) for a in accuracy], "loss": [float(v) for v in loss]}


def score_plugged_layers(features: np.ndarray | torch.Tensor, labels: Sequence[int] | np.ndarray,
                         llm_path: str | Path, settings: Any, *, layers: Sequence[int] | None = None,
                         device: torch.device | str = "cpu", trust_remote_code: bool = False,
                         progress: bool = False, details: dict | None = None) -> list[float]:
    """One score per layer (higher = better): PiFi's plug-in and head trained on ``features`` through that
    frozen layer of the LLM in ``llm_path``, mean held-out accuracy over folds x initialisations (with
    ``score="loss"``: minus the mean held-out loss of the same models).

    features: N x d_slm CLS vectors of the selection rows (never test rows); labels: N ints (0..C-1);
    layers: which decoder layers (default: all, in order); settings: the selector's PluginProbeParams
    (``pifi.selectors.score_plugged_layers`` takes them as keywords). Deterministic for fixed settings on one
    device. Pass a dict as ``details`` to get the per-model accuracies and losses of every layer.
    """
    features = torch.as_tensor(np.asarray(features, dtype=np.float32))
    labels_np = np.asarray(labels)
    if features.ndim != 2 or features.shape[0] != len(labels_np):
        raise ValueError(f"features must be N x d_slm with N = {len(labels_np)} (one row per label), "
                         f"got shape {tuple(features.shape)}")
    if labels_np.ndim != 1 or np.unique(labels_np).size < 2:
        raise ValueError("labels must be one integer per row, with at least 2 classes")
    if labels_np.min() < 0 or not np.issubdtype(labels_np.dtype, np.integer):
        raise ValueError(f"labels must be integers 0..C-1, got values {np.unique(labels_np)[:5].tolist()}")
    settings.check(labels_np)
    checkpoint = DecoderCheckpoint(llm_path, trust_remote_code=trust_remote_code)  # config and index read once
    layers = list(range(checkpoint.num_layers)) if layers is None else [int(layer) for layer in layers]
    per_layer: list[dict[str, list[float]]] = []
    iterable = layers
    if progress:
        from pifi.progress import progress as report_progress

        iterable = report_progress(layers, total=len(layers), desc="plugin_probe layers")
    for layer in iterable:
        plug = plugged_layer_from(checkpoint, layer).to(device)
        per_layer.append(plugged_layer_accuracy(features, torch.as_tensor(labels_np), plug,
                                                checkpoint.config.hidden_size, settings, device=device))
        del plug  # one layer's weights in memory at a time
    if details is not None:
        details.update({"layers": layers, "params": asdict(settings),
                        "model_accuracy": [r["accuracy"] for r in per_layer],
                        "held_out_loss": [float(np.mean(r["loss"])) for r in per_layer]})
    if settings.score == "loss":
        return [-float(np.mean(r["loss"])) for r in per_layer]
    return [float(np.mean(r["accuracy"])) for r in per_layer]


@torch.inference_mode()
def cls_vectors(slm_path: str | Path, frame, *, max_length: int, batch_size: int = 64,
                device: torch.device | str = "cpu", trust_remote_code: bool = False,
                encoder: torch.nn.Module | None = None) -> torch.Tensor:
    """The SLM's CLS state (what PiFi feeds its plug-in) for each row of ``frame`` (``text`` and, if present,
    ``text_pair``), tokenized as training tokenizes: N x d_slm float32. ``encoder``: a fine-tuned encoder of
    that SLM (a base run's, ``pifi.trained_runs.load_trained_classifier``); by default the pretrained one."""
    from transformers import AutoModel, AutoTokenizer

    from pifi.model_sources import LOAD_KWARGS

    tokenizer = AutoTokenizer.from_pretrained(slm_path, trust_remote_code=trust_remote_code)
    if encoder is None:
        encoder = AutoModel.from_pretrained(slm_path, trust_remote_code=trust_remote_code, **LOAD_KWARGS)
    encoder.to(device).eval()
    texts = frame["text"].tolist()
    pairs = frame["text_pair"].tolist() if "text_pair" in frame.columns else None
    vectors = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], pairs[start:start + batch_size] if pairs else None,
                          truncation=True, max_length=max_length, padding=True, return_tensors="pt").to(device)
        vectors.append(encoder(**batch).last_hidden_state[:, 0].float().cpu())
    return torch.cat(vectors)
