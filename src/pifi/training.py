"""Fine-tuning loop: Adam, label smoothing, gradient clipping, bf16 autocast on GPU, and the epoch
with the best validation accuracy kept (as in the PiFi paper).

The data path stays off the critical path: token ids are cached by the workflow (``pifi.tokens``),
padded once into a few length buckets and kept on the device; a batch is an index into them. On
CUDA the step can be compiled (``torch.compile``, CUDA graphs per bucket); the step is launch-bound
there, not compute-bound. Each finished epoch can be saved (``pifi.resume``) so that a killed job
resumes where it stopped and ends exactly as an unbroken run would.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn

from pifi.evaluation import classification_metrics
from pifi.progress import echo, note, progress
from pifi.resume import EpochState, ResumeStore
from pifi.tokens import TokenizedSplit, batches, length_buckets

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
    compile: str | bool = "auto"  # auto: on for CUDA (CUDA graphs), off on CPU
    seed: int = 0

    @classmethod
    def from_config(cls, training: Mapping, seed: int) -> "TrainingConfig":
        """The loop's settings from the config's `training` section (other keys belong elsewhere)."""
        return cls(**{f.name: training[f.name] for f in fields(cls) if f.name in training and f.name != "seed"},
                   seed=seed)


@dataclass
class TrainingResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    resumed_from_epoch: int = 0
    compiled: bool = False
    steps: int = 0       # optimizer steps taken by this process (not those of a resumed-from run)
    samples: int = 0     # training rows those steps saw
    # The best epoch's validation class probabilities (train_and_predict): the rows the oracle and the
    # layers tied with it are judged on.
    validation_probabilities: np.ndarray | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast_for(device: torch.device):
    """One switch for every device: bf16 autocast on GPU, plain fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


# On an H100 (benchmarks/README.md) a compiled BERT-base + PiFi step took ~12 ms against ~50 ms eager,
# and compiling took 40-45 s per job (four jobs compiling at once, cold cache): it pays back after
# ~1,200 steps. A job of 200 steps lost 40 s to it.
AUTO_COMPILE_MIN_STEPS = 1500


def compile_wanted(setting: str | bool, device: torch.device, steps: int | None = None) -> bool:
    """``auto`` compiles on CUDA for runs of at least ``AUTO_COMPILE_MIN_STEPS`` optimizer steps
    (``None``: any length): compiling costs more than it saves on a short run, and on CPU the
    step is compute-bound and compiling costs minutes."""
    if setting == "auto":
        return device.type == "cuda" and (steps is None or steps >= AUTO_COMPILE_MIN_STEPS)
    return bool(setting)


def compiled(model: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile`` with CUDA graphs on GPU (one graph per bucket shape), plain inductor on CPU.

    Only full training batches go through it (``train_classifier``): one graph per length bucket.
    """
    import torch._dynamo

    # One graph per length bucket (a handful); the default limit of 8 could be reached with many buckets.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    return torch.compile(model, mode=mode, dynamic=False)


@torch.inference_mode()
def predict_proba(model: nn.Module, split: TokenizedSplit, batch_size: int, device: torch.device,
                  buckets: list[int] | None = None) -> np.ndarray:
    """Class probabilities (N x C, float32) for every row of ``split``, in its order.

    Rows are scored shortest first (less padding) and put back in order.
    """
    model.eval()
    buckets = buckets or length_buckets(split.input_ids.shape[1])
    order = np.argsort(split.lengths, kind="stable")
    out = []
    for inputs, _ in batches(split, order, batch_size, buckets):
        _mark_step(device)
        with autocast_for(device):
            logits = model(**inputs)
        out.append(torch.softmax(logits.float(), dim=-1).cpu())
    probabilities = torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)
    restored = np.empty_like(probabilities)
    restored[order] = probabilities
    return restored


def _mark_step(device: torch.device) -> None:
    # CUDA graphs reuse their output buffers: tell them a new step starts.
    if device.type == "cuda" and hasattr(torch, "compiler"):
        torch.compiler.cudagraph_mark_step_begin()


def dataloader_order(n: int, generator: torch.Generator) -> np.ndarray:
    """One epoch's order exactly as DataLoader(shuffle=True, generator=generator) draws it: the
    iterator's base seed, RandomSampler's permutation, then its trailing permutation at the end."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    order = torch.randperm(n, generator=generator).numpy()
    torch.randperm(n, generator=generator)
    return order


def _train_steps(steps: Iterable[tuple[dict[str, torch.Tensor], torch.Tensor]], model: nn.Module,
                 step_model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                 params: list[nn.Parameter], cfg: TrainingConfig, device: torch.device,
                 result: TrainingResult) -> float:
    """One epoch's optimizer steps; the mean training loss, with one host sync at the end."""
    losses = []
    for inputs, labels in steps:
        _mark_step(device)
        # Each new shape costs a compile (seconds) and a CUDA graph; the last, partial batch is
        # one step an epoch, so it runs eager on the same modules instead.
        forward = step_model if len(labels) == cfg.batch_size else model
        with autocast_for(device):
            logits = forward(**inputs)
            loss = loss_fn(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        losses.append(loss.detach().clone())
        result.steps += 1
        result.samples += len(labels)
    return torch.stack(losses).mean().item()


def train_classifier(
    model: nn.Module, train: TokenizedSplit, validation: TokenizedSplit, cfg: TrainingConfig,
    device: torch.device, *, resume: ResumeStore | None = None,
    on_epoch: Callable[[dict], None] | None = None, stop_after_epoch: int | None = None,
) -> TrainingResult:
    """Train every parameter that requires grad; return the best-validation-accuracy state.

    ``stop_after_epoch``: end after that epoch, its checkpoint saved in ``resume`` (a race's rung): the
    run that resumes from it later is the uninterrupted run of ``cfg.epochs`` epochs.

    The sample order is the one a shuffling DataLoader with a generator seeded with ``cfg.seed``
    draws (``dataloader_order``), so runs see their rows in the same order as before buckets.
    """
    seed_everything(cfg.seed)
    model.to(device)
    train, validation = train.to(device), validation.to(device)
    buckets = length_buckets(cfg.max_length)
    planned_steps = cfg.epochs * -(-len(train) // cfg.batch_size)  # the whole run's, also when resumed
    compile_step = compile_wanted(cfg.compile, device, planned_steps)
    log.info("%d steps planned; the step is %s", planned_steps, "compiled" if compile_step else "eager")
    step_model = compiled(model, device) if compile_step else model
    params = [p for p in model.parameters() if p.requires_grad]  # the frozen layer gets no optimizer state
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, fused=device.type == "cuda")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    result = TrainingResult(best_state={}, best_epoch=-1, compiled=compile_step)
    best_accuracy, first_epoch = -1.0, 1
    if resume is not None and (saved := resume.load(model, optimizer, shuffle, device)) is not None:
        result.history, result.best_epoch, best_accuracy = saved.history, saved.best_epoch, saved.best_accuracy
        result.best_state, first_epoch = saved.best_state, saved.epoch + 1
        result.resumed_from_epoch = saved.epoch
        note(f"resumed after epoch {saved.epoch} of {cfg.epochs} (best so far: epoch {saved.best_epoch})", always=True)
    started = time.perf_counter()
    try:
        last_epoch = cfg.epochs if stop_after_epoch is None else min(cfg.epochs, stop_after_epoch)
        for epoch in range(first_epoch, last_epoch + 1):
            step_model.train()  # the same modules as model's
            epoch_start = time.perf_counter()
            order = dataloader_order(len(train), shuffle)
            steps = progress(batches(train, order, cfg.batch_size, buckets), total=-(-len(train) // cfg.batch_size),
                             desc=f"epoch {epoch}/{cfg.epochs}")
            train_loss = _train_steps(steps, model, step_model, optimizer, loss_fn, params, cfg, device, result)
            # Validation runs eager: a few dozen launch-bound batches an epoch cost less than compiling
            # and recording an inference graph per bucket.
            probs = predict_proba(model, validation, cfg.eval_batch_size, device, buckets)
            metrics = classification_metrics(validation.labels.cpu().numpy(), probs.argmax(axis=1))
            record = {"epoch": epoch, "train_loss": round(train_loss, 6),
                      **{f"validation_{k}": round(v, 6) for k, v in metrics.items()}}
            result.history.append(record)
            log.info("epoch %s (%.1f s)", json.dumps(record), time.perf_counter() - epoch_start)
            _echo_epoch(record, cfg.epochs, time.perf_counter() - epoch_start)
            if on_epoch is not None:
                on_epoch(record)
            if metrics["accuracy"] > best_accuracy:
                best_accuracy = metrics["accuracy"]
                result.best_epoch = epoch
                result.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.trainable_state_dict().items()}
            # Every epoch but a whole run's last is saved; a rung's last too, even when it is the recipe's
            # (race.first_epochs >= epochs): the run that continues it then only restores its best state.
            if resume is not None and (epoch < cfg.epochs or epoch == stop_after_epoch):
                resume.save(EpochState(epoch=epoch, history=result.history, best_epoch=result.best_epoch,
                                       best_accuracy=best_accuracy, best_state=result.best_state),
                            model, optimizer, shuffle, device)
    finally:
        if resume is not None:
            resume.wait()  # the last checkpoint is on disk before the run returns or fails
    result.train_seconds = time.perf_counter() - started
    return result


def _echo_epoch(record: dict, epochs: int, seconds: float) -> None:
    """The epoch's console line, when the job has been quiet for a while (pifi.progress.note)."""
    echo(f"epoch {record['epoch']} of {epochs}: validation accuracy {100 * record['validation_accuracy']:.1f}%, "
          f"train loss {record['train_loss']:.4f} ({seconds:.0f} s)")


def restore_best_state(model: nn.Module, result: TrainingResult) -> None:
    """Put the best epoch's weights back into ``model``.

    ``best_state`` holds every tensor but the frozen layer's (which training never changes), so the
    check is that it covers exactly the model's trainable state: a partial load would go unnoticed.
    """
    expected = set(getattr(model, "trainable_state_dict", model.state_dict)())
    if set(result.best_state) != expected:
        missing, extra = sorted(expected - set(result.best_state)), sorted(set(result.best_state) - expected)
        raise ValueError(f"the best state does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
    model.load_state_dict(result.best_state, strict=False)


def train_and_predict(
    model: nn.Module, train: TokenizedSplit, validation: TokenizedSplit, test: TokenizedSplit,
    cfg: TrainingConfig, device: torch.device, *, resume: ResumeStore | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[TrainingResult, np.ndarray]:
    """Train, restore the best epoch's weights, and predict ``test``.

    Returns the training result (with the validation rows' probabilities) and the test rows' class
    probabilities (N x C) in ``test``'s row order, computed with the best epoch's weights, which ``model`` keeps afterwards (the last
    epoch's weights are not the run's: the paper keeps the best validation epoch).
    """
    result = train_classifier(model, train, validation, cfg, device, resume=resume, on_epoch=on_epoch)
    restore_best_state(model, result)
    # Validation again with the best weights, rather than kept from training: a resumed run has it too.
    result.validation_probabilities = predict_proba(model, validation.to(device), cfg.eval_batch_size, device)
    probabilities = predict_proba(model, test.to(device), cfg.eval_batch_size, device)
    return result, probabilities
