"""Epoch checkpoints that let a killed training job resume, ending exactly as an unbroken run.

At each epoch end the store saves the trainable weights, the best state so far, Adam's state, every
random generator the loop draws from (dropout's, CUDA's, the shuffle's) and the history. It lives
beside the run's outputs but is not one of them, so Snakemake's clean-up of an incomplete job leaves
it alone. A fingerprint of everything the run depends on guards it: a checkpoint from other
settings is ignored, never resumed.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from pifi.artifacts import ArtifactError, read_safetensors, write_safetensors

log = logging.getLogger(__name__)


@dataclass
class EpochState:
    epoch: int
    history: list[dict]
    best_epoch: int
    best_accuracy: float
    best_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


class ResumeStore:
    """One file, ``directory/epoch.safetensors``: tensors, and the rest as JSON in its metadata.

    One file written atomically, so a kill can never leave the tensors of one epoch beside the
    state of another.
    """

    def __init__(self, directory: str | Path, fingerprint: str):
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    @property
    def path(self) -> Path:
        return self.directory / "epoch.safetensors"

    def save(self, state: EpochState, model: nn.Module, optimizer: torch.optim.Optimizer,
             shuffle: torch.Generator, device: torch.device) -> None:
        tensors = {f"model.{k}": v for k, v in model.trainable_state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in state.best_state.items()})
        for index, slots in optimizer.state_dict()["state"].items():
            for key, value in slots.items():
                tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.shuffle"] = shuffle.get_state()
        if device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
        meta = {k: v for k, v in asdict(state).items() if k != "best_state"}
        write_safetensors(self.path, tensors, {"state": json.dumps({"fingerprint": self.fingerprint, **meta})})

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer, shuffle: torch.Generator,
             device: torch.device) -> EpochState | None:
        """Restore the last saved epoch into ``model``, ``optimizer`` and ``shuffle``; None if there is none."""
        if not self.path.exists():
            return None
        try:
            tensors, metadata = read_safetensors(self.path, framework="pt")
            meta = json.loads(metadata["state"])
        except (ArtifactError, KeyError, ValueError) as error:
            log.warning("ignoring an unreadable epoch checkpoint (%s); training from the start", error)
            return None
        if meta.get("fingerprint") != self.fingerprint:
            log.info("ignoring the epoch checkpoint in %s: it was made with other settings", self.directory)
            return None
        model.load_state_dict(_group(tensors, "model."), strict=False)
        optimizer_state = optimizer.state_dict()
        for name, value in _group(tensors, "optim.").items():
            index, key = name.split(".", 1)
            optimizer_state["state"].setdefault(int(index), {})[key] = value
        optimizer.load_state_dict(optimizer_state)  # moves each state tensor to its parameter's device
        torch.set_rng_state(tensors["rng.torch"])
        shuffle.set_state(tensors["rng.shuffle"])
        if device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        return EpochState(epoch=meta["epoch"], history=meta["history"], best_epoch=meta["best_epoch"],
                          best_accuracy=meta["best_accuracy"], best_state=_group(tensors, "best."))

    def clear(self) -> None:
        """Remove the checkpoint once the run's outputs are written."""
        shutil.rmtree(self.directory, ignore_errors=True)


def _group(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def fingerprint(*parts: object) -> str:
    """A stable hash of JSON-serialisable settings."""
    import hashlib

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
