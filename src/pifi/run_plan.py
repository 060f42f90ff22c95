"""Which training runs a config asks for: the run matrix, shared by the workflow and the progress line.

The workflow learns an LLM's depth and the selected layers from its checkpoints (``prepare_model``,
``select_layer``); a training job reads the same facts from their files to say how many runs are
left. Both go through these functions, so the count a job prints is the plan Snakemake runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pifi.config import sweep_layer_set


def planned_layers(methods: Sequence[str], sweep: Mapping, depth: int) -> set[int]:
    """Layers known from the LLM's depth alone: the last (pifi_last) and the swept ones (pifi_sweep)."""
    layers = set()
    if "pifi_last" in methods:
        layers.add(depth - 1)
    if "pifi_sweep" in methods:
        layers |= set(sweep_layer_set(sweep, depth))
    return layers


def chosen_layers(methods: Sequence[str], chosen: Mapping[str, int], driving_selector: str) -> set[int]:
    """Layers the selection names: every selector's with a sweep (judging a selector needs its layer
    trained), else only the one driving pifi_ilm; none without pifi_ilm."""
    if "pifi_ilm" not in methods:
        return set()
    return set(chosen.values()) if "pifi_sweep" in methods else {chosen[driving_selector]}


def needs_selection(methods: Sequence[str]) -> bool:
    return bool(set(methods) & {"pifi_ilm", "pifi_sweep"})


def base_run_dirs(run: Mapping) -> list[str]:
    """results/runs/{dataset}/{slm}/base/seed{S} for every dataset x SLM x seed."""
    if "base" not in run["methods"]:
        return []
    return [f"results/runs/{dataset}/{slm}/base/seed{seed}"
            for dataset in run["datasets"] for slm in run["slms"] for seed in run["seeds"]]


def pifi_run_dir(dataset: str, slm: str, llm: str, layer: int, seed: int) -> str:
    """Where one PiFi run lives (the race's first rung keeps its epoch checkpoint there too)."""
    return f"results/runs/{dataset}/{slm}/pifi/{llm}/layer{layer}/seed{seed}"


def pifi_run_dirs(run: Mapping, layers_of: Callable[[str, str, str], set[int]]) -> list[str]:
    """results/runs/{dataset}/{slm}/pifi/{llm}/layer{L}/seed{S} for the layers ``layers_of`` gives."""
    return [pifi_run_dir(dataset, slm, llm, layer, seed)
            for dataset in run["datasets"] for slm in run["slms"] for llm in run["llms"]
            for layer in sorted(layers_of(dataset, slm, llm)) for seed in run["seeds"]]


def race_seed(run: Mapping) -> int:
    """The seed of the race's first two rungs: the lowest (pifi.race.replay takes the same)."""
    return min(run["seeds"])


def race_run_dirs(run: Mapping, survivors_of: Callable[[str, str, str, int], Sequence[int]]) -> list[str]:
    """The whole runs pifi_race trains: the first cut's survivors on the race seed, the second cut's on
    every seed (``survivors_of(dataset, slm, llm, cut)``); the first rung's partial runs are not counted."""
    if "pifi_race" not in run["methods"]:
        return []
    dirs = []
    for dataset in run["datasets"]:
        for slm in run["slms"]:
            for llm in run["llms"]:
                dirs += [pifi_run_dir(dataset, slm, llm, layer, race_seed(run))
                         for layer in survivors_of(dataset, slm, llm, 1)]
                dirs += [pifi_run_dir(dataset, slm, llm, layer, seed)
                         for layer in survivors_of(dataset, slm, llm, 2) for seed in run["seeds"]]
    return list(dict.fromkeys(dirs))
