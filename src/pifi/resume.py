"""Epoch checkpoints that let a killed training job resume, ending exactly as an unbroken run.

At each epoch end the store saves the trainable weights, the best state so far, Adam's state, every
random generator the loop draws from (dropout's, CUDA's, the shuffle's) and the history. It lives
beside the run's outputs but is not one of them, so Snakemake's clean-up of an incomplete job leaves
it alone. A fingerprint of everything the run depends on guards it: a checkpoint from other
settings is ignored, never resumed.

The file is written in the background: ``save`` copies the state to host memory (a fraction of a
second) and a writer thread serialises, checksums and writes it (seconds for BERT-base's 1.8 GB)
while the next epoch trains, so the GPU does not wait on the disk. One write is in flight at a
time; ``wait`` (which ``train_classifier`` calls before it returns or fails) and ``clear`` finish
it first and raise its error, if any. A kill during a write leaves the previous epoch's file: the
run then resumes from there, exactly as before, one epoch earlier.
"""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
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
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    @property
    def path(self) -> Path:
        return self.directory / "epoch.safetensors"

    def save(self, state: EpochState, model: nn.Module, optimizer: torch.optim.Optimizer,
             shuffle: torch.Generator, device: torch.device) -> None:
        """Snapshot this epoch's state to host memory now; write it in the background."""
        self.wait()  # one write in flight (epochs land in order, an error is not lost), one snapshot held
        # Copies, also on the CPU: the next epoch updates the weights and Adam's state in place
        # while the writer reads them. The best state is never updated in place, only replaced.
        tensors = {f"model.{k}": _host_copy(v) for k, v in model.trainable_state_dict().items()}
        tensors.update({f"best.{k}": v for k, v in state.best_state.items()})
        for index, slots in optimizer.state_dict()["state"].items():
            for key, value in slots.items():
                tensors[f"optim.{index}.{key}"] = _host_copy(torch.as_tensor(value))
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.shuffle"] = shuffle.get_state()
        if device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
        meta = {k: v for k, v in asdict(state).items() if k != "best_state"}
        metadata = {"state": json.dumps({"fingerprint": self.fingerprint, **meta})}
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pifi-resume")
        self._pending = self._writer.submit(write_safetensors, self.path, tensors, metadata)

    def wait(self) -> None:
        """Finish the write in flight, if any; raise its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer, shuffle: torch.Generator,
             device: torch.device) -> EpochState | None:
        """Restore the last saved epoch into ``model``, ``optimizer`` and ``shuffle``; None if there is none."""
        if not self.path.exists():
            return None
        try:
            tensors, metadata = read_safetensors(self.path, framework="pt")
            meta = json.loads(metadata["state"])
        except (ArtifactError, KeyError, ValueError) as error:
            found = error.problem if isinstance(error, ArtifactError) else f"{self.path}: {error}"
            log.warning("corrupt epoch checkpoint ignored; training restarts from epoch 1 (%s)", found)
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
        try:
            self.wait()  # else a late write would bring the directory back
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None
            shutil.rmtree(self.directory, ignore_errors=True)


def _host_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True)


def _group(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def fingerprint(*parts: object) -> str:
    """A stable hash of JSON-serialisable settings."""
    import hashlib

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
