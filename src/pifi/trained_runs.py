"""A finished run's classifier, loaded back from its checkpoint and model spec (what plugin_probe's
``features: finetuned`` reads the fine-tuned encoder from).

Apart from pifi.model so that training's code fingerprint does not follow it: a job's fingerprint covers
every module its script imports, and loading a run back changes nothing about how one is trained.
"""

from __future__ import annotations

from pathlib import Path

from pifi.artifacts import ArtifactError, read_safetensors
from pifi.model import FROZEN_PREFIX, ModelSpec, PiFiClassifier, build_classifier


def load_trained_classifier(spec: ModelSpec, checkpoint: str | Path) -> PiFiClassifier:
    """A trained run's classifier: ``spec`` (its model.json's "model") rebuilt and its verified checkpoint
    loaded, the frozen layer rebuilt from its LLM; a checkpoint whose tensors do not fit is an ArtifactError."""
    model = build_classifier(spec, pretrained=False)
    tensors, _ = read_safetensors(checkpoint)
    problem = f"{checkpoint} does not fit its model spec ({spec.method}, {spec.slm_path})"
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as error:  # a tensor of the wrong shape
        raise ArtifactError(f"{problem}: {str(error).splitlines()[-1].strip()}; delete the run to retrain it") from None
    missing = [key for key in missing if not key.startswith(FROZEN_PREFIX)]
    if missing or unexpected:
        raise ArtifactError(f"{problem}: missing {missing[:3]}, unexpected {unexpected[:3]}; delete the run to "
                            "retrain it")
    return model.eval()
