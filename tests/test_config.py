"""The config schema and the plain-language checks in front of it."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml

from pifi.config import ConfigError, check_config_keys, check_run_names, unknown_keys
from tiny_project import REPO

SCHEMA_PATH = REPO / "workflow/schemas/config.schema.yaml"


@pytest.fixture(scope="module")
def schema():
    return yaml.safe_load(SCHEMA_PATH.read_text())


@pytest.fixture()
def config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_shipped_configs_are_valid(schema, config):
    check_config_keys(config, SCHEMA_PATH)
    jsonschema.validate(config, schema)
    check_run_names(config)
    demo = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    check_config_keys(demo, SCHEMA_PATH)


def test_every_schema_key_is_described(schema):
    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub or "$ref" in sub, f"{path}.{key} has no description"
            walk(sub, f"{path}.{key}")

    walk(schema, "config")
    for name, definition in schema["definitions"].items():
        walk(definition, name)


def test_unknown_key_is_named_with_the_allowed_ones(config):
    config["selection"]["top_pcc"] = 3
    config["datasets"]["sst2"]["txt_column"] = "x"
    with pytest.raises(ConfigError) as error:
        check_config_keys(config, SCHEMA_PATH)
    message = str(error.value)
    assert "config.selection.top_pcc: unknown key" in message and "top_pc" in message
    assert "config.datasets.sst2.txt_column: unknown key" in message and "text_column" in message


def test_registry_entries_may_have_any_name(schema, config):
    config["models"]["my_llm"] = {"source": "local", "name": "x", "path": "/models/x"}
    assert unknown_keys(config, schema) == []


def test_unknown_dataset_or_model_in_run(config):
    bad = copy.deepcopy(config)
    bad["run"]["datasets"] = ["sst2", "sst3"]
    with pytest.raises(ConfigError, match=r"run.datasets: unknown dataset 'sst3'.*'sst2'"):
        check_run_names(bad)
    bad = copy.deepcopy(config)
    bad["run"]["llms"] = ["gpt5"]
    with pytest.raises(ConfigError, match=r"run.llms: unknown model 'gpt5'.*'qwen2_0.5b'"):
        check_run_names(bad)


@pytest.mark.parametrize("mutate, fragment", [
    (lambda c: c["run"].update(methods=["base", "pifi_best"]), "pifi_best"),
    (lambda c: c["selection"].update(split="test"), "'test' is not one of"),
    (lambda c: c["datasets"].update(x={"source": "local"}), "'path' is a required property"),
    (lambda c: c["datasets"].update(x={"source": "demo", "name": "news"}), "'news' is not one of"),
])
def test_schema_rejects_bad_values(schema, config, mutate, fragment):
    mutate(config)
    with pytest.raises(jsonschema.ValidationError, match=fragment):
        jsonschema.validate(config, schema)
