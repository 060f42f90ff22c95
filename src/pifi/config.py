"""Config checks that speak plainly: an unknown key is named with its path and the allowed keys.

jsonschema reports the same mistake as an `additionalProperties` failure followed by the whole
schema; this check runs first so the user reads one line. Types, ranges and defaults are left
to the schema (Snakemake's `validate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
import re
from typing import Any

import yaml

# Registry keys become directory names under results/: no separators, no "..", no hidden files.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
REGISTRIES = ("datasets", "models")


class ConfigError(ValueError):
    """A config value the workflow cannot use; the message names the key."""


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def unknown_keys(config: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None,
                 where: str = "config") -> list[str]:
    """Messages for keys that the schema does not allow, found anywhere in ``config``."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if not isinstance(config, Mapping):
        return []
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    problems = []
    for key, value in config.items():
        path = f"{where}.{key}"
        if key in properties:
            problems += unknown_keys(value, properties[key], root, path)
        elif extra is False:
            problems.append(f"{path}: unknown key; allowed keys here: {', '.join(sorted(properties))}")
        elif isinstance(extra, Mapping):
            problems += unknown_keys(value, extra, root, path)
    return problems


_SCALARS = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}


def coerce_command_line_strings(config: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None) -> Any:
    """``config`` with the strings a ``--config`` value leaves where the schema wants a number,
    boolean or null turned into that type (returns a new object; the rest is unchanged).

    Snakemake parses a nested ``--config 'selection={"top_pc": 3}'`` with YAML's BaseLoader, which
    keeps every scalar a string: "3" would fail the schema's integer check. A string is converted
    only where the schema does not accept a string there and its YAML reading has an allowed type.
    """
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    for combinator in ("oneOf", "anyOf"):
        if combinator in schema and isinstance(config, (str, list, Mapping)):
            import jsonschema

            for branch in schema[combinator]:
                candidate = coerce_command_line_strings(config, branch, root)
                if jsonschema.Draft7Validator(_resolve(branch, root)).is_valid(candidate):
                    return candidate
            return config
    if isinstance(config, Mapping):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        return {key: coerce_command_line_strings(value, properties[key], root) if key in properties
                else coerce_command_line_strings(value, extra, root) if isinstance(extra, Mapping)
                else _yaml_scalar(value) if schema.get("type") == "object" and not properties  # free-form settings
                else value
                for key, value in config.items()}
    if isinstance(config, list):
        items = schema.get("items")
        return [coerce_command_line_strings(value, items, root) for value in config] if isinstance(items, Mapping) \
            else config
    if isinstance(config, str) and "enum" in schema and config not in schema["enum"]:
        parsed = _yaml_scalar(config)  # training.compile: [auto, true, false]
        return parsed if parsed in schema["enum"] else config
    if isinstance(config, str):
        types = schema.get("type", [])
        types = [types] if isinstance(types, str) else list(types)
        if "string" in types or not types:
            return config
        try:
            parsed = yaml.safe_load(config)
        except yaml.YAMLError:
            return config
        if isinstance(parsed, str) and "number" in types:  # YAML 1.1 reads 5e-5 (no dot) as a string
            try:
                parsed = float(config)
            except ValueError:
                return config
        if any(isinstance(parsed, _SCALARS[t]) and not (t != "boolean" and isinstance(parsed, bool))
               for t in types if t in _SCALARS):
            return parsed
    return config


def _yaml_scalar(value: Any) -> Any:
    """A free-form setting (``selector_params: {<selector>: {folds: 3}}``): numbers and booleans from
    ``--config`` strings, recursively; other strings stay strings."""
    if isinstance(value, Mapping):
        return {key: _yaml_scalar(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_yaml_scalar(item) for item in value]
    if isinstance(value, str) and value.strip():
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return parsed if isinstance(parsed, (int, float, bool)) else value
    return value


def repeated_items(config: Any, schema: Mapping[str, Any], root: Mapping[str, Any] | None = None,
                   where: str = "config") -> list[str]:
    """Messages for values listed twice in a list the schema marks ``uniqueItems`` (seeds, datasets, ...).

    A repeated seed would count twice in every bootstrap and narrow each interval: refused, not merged.
    """
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if isinstance(config, list):
        branches = [schema, *schema.get("oneOf", []), *schema.get("anyOf", [])]
        if any(_resolve(branch, root).get("uniqueItems") for branch in branches):
            seen, repeated = set(), []
            for value in config:
                key = repr(value)
                if key in seen and value not in repeated:
                    repeated.append(value)
                seen.add(key)
            return [f"{where}: {value!r} is listed more than once; list each value once" for value in repeated]
        return []
    if not isinstance(config, Mapping):
        return []
    properties, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
    problems = []
    for key, value in config.items():
        if key in properties:
            problems += repeated_items(value, properties[key], root, f"{where}.{key}")
        elif isinstance(extra, Mapping):
            problems += repeated_items(value, extra, root, f"{where}.{key}")
    return problems


def check_config_keys(config: Mapping[str, Any], schema_path: str | Path) -> None:
    """Raise ConfigError naming every unknown key (and what is allowed there) and every repeated name."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = unknown_keys(config, schema) + unsafe_names(config) + repeated_items(config, schema)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def check_run_names(config: Mapping[str, Any]) -> None:
    """Every dataset and model named under `run` must be defined in its registry."""
    for key, registry in (("datasets", "datasets"), ("slms", "models"), ("llms", "models")):
        for name in config["run"][key]:
            if name not in config[registry]:
                raise ConfigError(
                    f"config run.{key}: unknown {registry[:-1]} {name!r}; "
                    f"define it under `{registry}:` or use one of {sorted(config[registry])}"
                )


def unsafe_names(config: Mapping[str, Any]) -> list[str]:
    """Registry keys that could not be used safely as one path component (e.g. ``../x``, ``a/b``)."""
    return [f"config.{registry}.{name}: not a safe name (letters, digits, '.', '_' and '-', not starting "
            f"with '.' or '-'): it becomes a directory under results/"
            for registry in REGISTRIES for name in config.get(registry) or {}
            if not SAFE_NAME.fullmatch(str(name))]


def sweep_layer_set(sweep: Mapping[str, Any], depth: int) -> list[int]:
    """The layers a sweep trains: ``all`` every ``stride``-th layer from 0 plus the last, or a list.

    Negative indices count from the end (-1 = the last layer), as in Python.
    """
    layers = sweep["layers"]
    if layers == "all":
        chosen = set(range(0, depth, sweep["stride"])) | {depth - 1}
    else:
        bad = [layer for layer in layers if not -depth <= layer < depth]
        if bad:
            raise ConfigError(f"config sweep.layers: {bad} out of range for an LLM of {depth} decoder layers "
                              f"(valid 0..{depth - 1}, or -{depth}..-1 from the end)")
        chosen = {layer % depth for layer in layers}
    return sorted(chosen)


# Training settings a dataset's entry may set for its own runs (a large dataset beside small ones).
PER_DATASET_TRAINING = ("max_train_samples", "max_eval_samples")


def dataset_training(training: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """The training settings of one dataset's runs: ``training.*``, with the dataset entry's caps over it."""
    return {**training, **{key: spec[key] for key in PER_DATASET_TRAINING if key in spec}}


def job_threads(share: str, *, cores: int, on_cpu: bool) -> int:
    """CPU threads for a job: with GPUs 1 (the cores run jobs side by side); on CPU, "large" jobs (extraction,
    CLS vectors, PCA, the plug-in probe) take half the cores and the "many" (training, scores) a quarter.

    Not every core: on the 2-core VM, two-thread large jobs made ``make demo`` 1.31x slower (982 s vs 1,289 s,
    benchmarks/README.md), since they barely ran faster and held both cores; there this gives 1 everywhere.
    """
    if share not in ("large", "many"):
        raise ValueError(f"share must be 'large' or 'many', not {share!r}")
    if not on_cpu:
        return 1
    return max(1, cores // (2 if share == "large" else 4))
