"""Config checks that speak plainly: an unknown key is named with its path and the allowed keys.

jsonschema reports the same mistake as an `additionalProperties` failure followed by the whole
schema; this check runs first so the user reads one line. Types, ranges and defaults are left
to the schema (Snakemake's `validate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


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


def check_config_keys(config: Mapping[str, Any], schema_path: str | Path) -> None:
    """Raise ConfigError naming every unknown key (and what is allowed there)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = unknown_keys(config, schema)
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
