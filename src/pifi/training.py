"""Fine-tuning loop: Adam, label smoothing, gradient clipping, dynamic padding, bf16 autocast on
GPU, and the epoch with the best validation accuracy kept (as in the PiFi paper)."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from pifi.evaluation import classification_metrics

log = logging.getLogger(__name__)


@dataclass
class TrainingConfig:
    """Defaults are the paper's: Adam at 5e-5, batch 32, 3 epochs, max length 100."""

    learning_rate: float = 5e-5
    batch_size: int = 32
    epochs: int = 3
    max_length: int = 100
    label_smoothing: float = 0.05
    grad_clip: float = 5.0
    eval_batch_size: int = 64
    seed: int = 0

    @classmethod
    def from_config(cls, training: Mapping, seed: int) -> "TrainingConfig":
        """The loop's settings from the config's `training` section (other keys belong elsewhere)."""
        return cls(**{f.name: training[f.name] for f in fields(cls) if f.name in training}, seed=seed)


@dataclass
class TrainingResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast_for(device: torch.device):
    """One switch for every device: bf16 autocast on GPU, plain fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def encode_frame(tokenizer, frame: pd.DataFrame, max_length: int) -> list[dict]:
    """Tokenize once, without padding: batches are padded to their own longest row."""
    pairs = frame["text_pair"].tolist() if "text_pair" in frame.columns else None
    encoded = tokenizer(frame["text"].tolist(), pairs, truncation=True, max_length=max_length)
    labels = frame["label"].tolist()
    keys = list(encoded.keys())
    return [{**{k: encoded[k][i] for k in keys}, "labels": labels[i]} for i in range(len(frame))]


def make_loader(tokenizer, rows: list[dict], batch_size: int, *, shuffle: bool, seed: int = 0) -> DataLoader:
    def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
        return tokenizer.pad(batch, return_tensors="pt")

    generator = torch.Generator().manual_seed(seed)
    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator)


def _model_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    keys = ("input_ids", "attention_mask", "token_type_ids")
    return {k: batch[k].to(device, non_blocking=True) for k in keys if k in batch}


@torch.inference_mode()
def predict_proba(model: nn.Module, loader: DataLoader, device: torch.device, *, progress: bool = False) -> np.ndarray:
    """Class probabilities (N x C, float32) for every row of ``loader``, in order."""
    model.eval()
    out = []
    for batch in tqdm(loader, desc="predict", disable=not progress):
        with autocast_for(device):
            logits = model(**_model_inputs(batch, device))
        out.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out).numpy()


def train_classifier(
    model: nn.Module, tokenizer, train: pd.DataFrame, validation: pd.DataFrame, cfg: TrainingConfig,
    device: torch.device, *, on_epoch: Callable[[dict], None] | None = None, progress: bool = True,
) -> TrainingResult:
    """Train every parameter that requires grad; return the best-validation-accuracy state."""
    seed_everything(cfg.seed)
    model.to(device)
    train_loader = make_loader(tokenizer, encode_frame(tokenizer, train, cfg.max_length), cfg.batch_size,
                               shuffle=True, seed=cfg.seed)
    val_loader = make_loader(tokenizer, encode_frame(tokenizer, validation, cfg.max_length), cfg.eval_batch_size,
                             shuffle=False)
    params = [p for p in model.parameters() if p.requires_grad]  # the frozen layer gets no optimizer state
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, fused=device.type == "cuda")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    result = TrainingResult(best_state={}, best_epoch=-1)
    best_accuracy = -1.0
    started = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        losses = []
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress)
        for batch in bar:
            with autocast_for(device):
                logits = model(**_model_inputs(batch, device))
                loss = loss_fn(logits.float(), batch["labels"].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            losses.append(loss.detach())
        train_loss = torch.stack(losses).mean().item()  # one host sync per epoch, not per step
        probs = predict_proba(model, val_loader, device)
        metrics = classification_metrics(validation["label"].to_numpy(), probs.argmax(axis=1))
        record = {"epoch": epoch, "train_loss": round(train_loss, 6),
                  **{f"validation_{k}": round(v, 6) for k, v in metrics.items()},
                  "seconds": round(time.perf_counter() - epoch_start, 3)}
        result.history.append(record)
        log.info("epoch %s", json.dumps(record))
        if on_epoch is not None:
            on_epoch(record)
        if metrics["accuracy"] > best_accuracy:
            best_accuracy = metrics["accuracy"]
            result.best_epoch = epoch
            result.best_state = {k: v.detach().to("cpu", copy=True)
                                 for k, v in model.trainable_state_dict().items()}
    result.train_seconds = time.perf_counter() - started
    return result
