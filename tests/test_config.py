"""The config schema and the plain-language checks in front of it."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml

from pifi.config import (ConfigError, check_config_keys, check_run_names, coerce_command_line_strings, job_threads,
                         repeated_items, sweep_layer_set, unknown_keys, unsafe_names)
from pifi.selection_checks import check_data_limits, check_llm_limits, check_selection_limits
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


@pytest.mark.parametrize("path, value", [
    (("run", "seeds"), [2023, 2024, 2023]), (("run", "datasets"), ["sst2", "imdb", "sst2"]),
    (("run", "slms"), ["bert", "bert"]), (("run", "llms"), ["qwen2_0.5b", "qwen2_0.5b"]),
    (("run", "methods"), ["base", "pifi_ilm", "base"]), (("selection", "selectors"), ["first", "fisher", "first"]),
    (("sweep", "layers"), [0, 4, 4]),
])
def test_a_name_listed_twice_is_refused_with_its_key_and_value(config, path, value):
    section, key = path
    config.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError) as error:
        check_config_keys(config, SCHEMA_PATH)
    repeated = value[-1]
    assert f"config.{section}.{key}: {repeated!r} is listed more than once" in str(error.value)
    assert str(error.value).count("listed more than once") == 1


def test_a_list_without_repeats_passes_the_repeat_check(schema, config):
    config.setdefault("sweep", {})["layers"] = [0, 4, -1]
    assert repeated_items(config, schema) == []


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


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "-flag", "x\n", ""])
def test_unsafe_registry_names_are_refused(config, name):
    config["datasets"][name] = {"source": "local", "path": "d"}
    assert any(repr(name)[1:-1] in p or name in p for p in unsafe_names(config))


def test_safe_registry_names_pass(config):
    config["models"]["qwen2_0.5b-v2_x"] = {"source": "local", "name": "x", "path": "/m"}
    assert unsafe_names(config) == []


def selection(**changes):
    return {"split": "train", "n_samples": 400, "n_pcs": 16, "top_pc": 5, "stability_resamples": 10,
            "stability_fraction": 0.8, "selector_params": {}, **changes}


@pytest.mark.parametrize("changes, fragment", [
    ({"top_pc": 17}, "selection.top_pc (17) is larger than selection.n_pcs (16)"),
    ({"n_pcs": 20, "top_pc": 5, "n_samples": 18}, "selection.n_pcs (20) is larger than selection.n_samples (18)"),
    ({"n_samples": 18, "n_pcs": 16}, "larger than a stability subset (14"),
])
def test_contradicting_selection_settings_are_refused_never_clamped(config, changes, fragment):
    config["selection"] = selection(**changes)
    with pytest.raises(ConfigError) as error:
        check_selection_limits(config)
    assert fragment in str(error.value)


def test_selection_limits_against_the_data_and_the_llm():
    info = {"splits": {"train": {"label_counts": {"0": 90, "1": 30}}}}
    check_data_limits(info, selection(n_samples=100), ["probe_cv"], dataset="d")  # 25 of the rarer class: ok
    with pytest.raises(ConfigError, match="n_samples is 400 but the train split of 'd' has 120 rows"):
        check_data_limits(info, selection(), [], dataset="d")
    with pytest.raises(ConfigError, match="probe_cv: 5 folds"):
        check_data_limits(info, selection(n_samples=12, n_pcs=4, top_pc=2, stability_resamples=0), ["probe_cv"], dataset="d")
    check_llm_limits({"name": "m", "hidden_size": 64}, selection(), ["silhouette"])
    with pytest.raises(ConfigError, match="n_pcs \\(16\\) is larger than the hidden size 8"):
        check_llm_limits({"name": "m", "hidden_size": 8}, selection(), [])


def test_the_limits_follow_each_selectors_declared_defaults(monkeypatch):
    """The checks read a selector's folds and n_components where the selector declares them
    (pifi.selectors): a changed default is checked as it is, not as a copy in this module remembers it."""
    import dataclasses

    from pifi import selectors

    info = {"splits": {"train": {"label_counts": {"0": 90, "1": 30}}}}
    check_data_limits(info, selection(n_samples=100), ["probe_cv", "plugin_probe"], dataset="d")
    probe_cv = selectors._REGISTRY["probe_cv"]
    monkeypatch.setitem(selectors._REGISTRY, "probe_cv", dataclasses.replace(probe_cv, defaults={**probe_cv.defaults, "folds": 40}))
    with pytest.raises(ConfigError, match="probe_cv: 40 folds"):
        check_data_limits(info, selection(n_samples=100), ["probe_cv"], dataset="d")
    silhouette = selectors._REGISTRY["silhouette"]
    monkeypatch.setitem(selectors._REGISTRY, "silhouette",
                        dataclasses.replace(silhouette, defaults={**silhouette.defaults, "n_components": 100}))
    with pytest.raises(ConfigError, match="silhouette: n_components 100"):
        check_llm_limits({"name": "m", "hidden_size": 64}, selection(), ["silhouette"])


@pytest.mark.parametrize("sweep, depth, expected", [
    ({"layers": "all", "stride": 1}, 4, [0, 1, 2, 3]),
    ({"layers": "all", "stride": 10}, 30, [0, 10, 20, 29]),
    ({"layers": [0, -1, 5]}, 24, [0, 5, 23]),
])
def test_sweep_layer_set(sweep, depth, expected):
    assert sweep_layer_set(sweep, depth) == expected


def test_sweep_layers_out_of_range_are_refused():
    with pytest.raises(ConfigError, match=r"\[24\] out of range for an LLM of 24 decoder layers"):
        sweep_layer_set({"layers": [24]}, 24)


def test_command_line_strings_become_the_types_the_schema_wants(schema, config):
    """Snakemake reads a nested --config value with YAML's BaseLoader: every scalar a string."""
    cli = {"selection": {"top_pc": "3", "selector": "fisher", "dtype": "bfloat16",
                         "selector_params": {"probe_cv": {"folds": "3", "seed": "x"}}},
           "sweep": {"layers": ["0", "8", "-1"]}, "training": {"learning_rate": "5e-5", "max_train_samples": "null",
                                                              "compile": "auto"},
           "gpus": ["0", "1"], "run": {"seeds": ["1", "2"], "datasets": ["007"]},
           "datasets": {"007": {"source": "local", "path": "123"}}}
    typed = coerce_command_line_strings(cli, schema)
    assert typed == {"selection": {"top_pc": 3, "selector": "fisher", "dtype": "bfloat16",
                                   "selector_params": {"probe_cv": {"folds": 3, "seed": "x"}}},
                     "sweep": {"layers": [0, 8, -1]},
                     "training": {"learning_rate": 5e-5, "max_train_samples": None, "compile": "auto"},
                     "gpus": ["0", "1"],  # the schema takes strings there: left alone
                     "run": {"seeds": [1, 2], "datasets": ["007"]},  # names stay strings
                     "datasets": {"007": {"source": "local", "path": "123"}}}
    assert coerce_command_line_strings({"sweep": {"layers": "all"}}, schema) == {"sweep": {"layers": "all"}}
    assert coerce_command_line_strings({"training": {"compile": "true"}}, schema) == {"training": {"compile": True}}
    merged = copy.deepcopy(config)
    merged["selection"]["top_pc"] = typed["selection"]["top_pc"]
    jsonschema.validate(merged, schema)


def test_a_string_that_is_no_number_is_left_for_the_schema_to_refuse(schema, config):
    typed = coerce_command_line_strings({"selection": {"top_pc": "three"}}, schema)
    assert typed == {"selection": {"top_pc": "three"}}
    broken = copy.deepcopy(config)
    broken["selection"]["top_pc"] = typed["selection"]["top_pc"]
    with pytest.raises(jsonschema.ValidationError, match="'three' is not of type 'integer'"):
        jsonschema.validate(broken, schema)


@pytest.mark.parametrize("share, cores, on_cpu, threads", [
    ("large", 2, True, 1), ("many", 2, True, 1),      # the 2-core VM: as before, one each
    ("large", 16, True, 8), ("many", 16, True, 4),    # a CPU server: the tail of a run uses its cores
    ("large", 16, False, 1), ("many", 16, False, 1),  # GPUs: the cores run jobs side by side
])
def test_job_threads_scale_with_the_cores_on_cpu_only(share, cores, on_cpu, threads):
    assert job_threads(share, cores=cores, on_cpu=on_cpu) == threads


def test_selectors_all_adds_the_opt_in_selectors_and_other_words_are_refused(schema, config):
    """selection.selectors: left out = the selectors declared to run by default; `all` = every declared
    one, the opt-in plugin_probe_finetuned too; another word is no list and is refused by the schema."""
    from pifi.selection_checks import fill_selection_defaults
    from pifi.selectors import ALL_SELECTORS, SELECTORS

    left_out = copy.deepcopy(config)
    fill_selection_defaults(left_out)
    assert left_out["selection"]["selectors"] == list(SELECTORS)
    everything = copy.deepcopy(config)
    everything["selection"]["selectors"] = "all"
    jsonschema.validate(everything, schema)
    fill_selection_defaults(everything)
    assert everything["selection"]["selectors"] == list(ALL_SELECTORS)
    assert set(ALL_SELECTORS) - set(SELECTORS) == {"plugin_probe_finetuned"}
    wrong = copy.deepcopy(config)
    wrong["selection"]["selectors"] = "every"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong, schema)
