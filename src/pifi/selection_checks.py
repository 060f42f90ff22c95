"""The selection settings checked before anything runs: selector names and settings against the selectors'
declarations, PC patching's limits, and, once a dataset or LLM is prepared, the limits that depend on its
size. A broken one is a ConfigError naming the key; nothing is clamped.

Apart from pifi.config so that only the rules that select read the selectors (a job's code fingerprint
follows its imports: editing a selector re-runs no training).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pifi.config import ConfigError
from pifi.selectors import ALL_SELECTORS, PATCHING, SELECTORS, declared, selector_params  # each where it is declared


def fill_selection_defaults(config: Mapping[str, Any]) -> None:
    """PC patching's settings (selection.n_pcs, top_pc, lambdas) default to its declaration's, where the
    schema leaves them out (pifi/selectors/pc_patching.py holds them once); and selection.selectors to
    every selector declared to run by default ("all": every declared one, the opt-in ones too)."""
    selection = config["selection"]
    for key, value in selector_params(PATCHING).items():
        selection.setdefault(key, list(value) if isinstance(value, tuple) else value)
    selection.setdefault("selectors", list(SELECTORS))
    if selection["selectors"] == "all":
        selection["selectors"] = list(ALL_SELECTORS)


def selector_problems(selection: Mapping[str, Any]) -> list[str]:
    """Selector names and their settings that no declaration knows, each with what is there."""
    problems = []
    choices = ", ".join(ALL_SELECTORS)
    for where, name in [*(("selection.selector", name) for name in [selection.get("selector")] if name is not None),
                        *(("selection.selectors", name) for name in selection.get("selectors") or []),
                        *(("selection.selector_params", name) for name in selection.get("selector_params") or {})]:
        if name not in ALL_SELECTORS:
            problems.append(f"{where}: unknown selector {name!r}; choose one of {choices}")
    for name, params in (selection.get("selector_params") or {}).items():
        if name not in ALL_SELECTORS:
            continue
        if name == PATCHING:
            problems.append(f"selection.selector_params.{name}: PC patching takes n_pcs, top_pc and lambdas "
                            f"from selection itself (selection.n_pcs, ...), not from selector_params")
            continue
        if not isinstance(params, Mapping):
            problems.append(f"selection.selector_params.{name}: expected a mapping of settings, got {params!r}")
            continue
        allowed = declared(name).defaults
        for key in sorted(set(params) - set(allowed)):
            problems.append(f"selection.selector_params.{name}.{key}: {name} has no such setting; its settings "
                            f"are {', '.join(sorted(allowed)) or 'none'}")
    return problems


def check_selection_limits(config: Mapping[str, Any]) -> None:
    """Selection settings that contradict each other, refused before anything runs (never clamped)."""
    s = config["selection"]
    problems = selector_problems(s)
    if s["top_pc"] > s["n_pcs"]:
        problems.append(f"selection.top_pc ({s['top_pc']}) is larger than selection.n_pcs ({s['n_pcs']}): "
                        "only n_pcs components exist to patch")
    if s["n_pcs"] > s["n_samples"]:
        problems.append(f"selection.n_pcs ({s['n_pcs']}) is larger than selection.n_samples ({s['n_samples']}): "
                        "PCA cannot find more components than samples")
    subset = stability_subset_size(s)
    if s["stability_resamples"] and s["n_pcs"] > subset:
        problems.append(f"selection.n_pcs ({s['n_pcs']}) is larger than a stability subset "
                        f"({subset} = stability_fraction x n_samples)")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def stability_subset_size(selection: Mapping[str, Any]) -> int:
    """Rows in each stability subset (as pifi.selectors.selection_stability draws them)."""
    return max(2, int(round(selection["stability_fraction"] * selection["n_samples"])))


def check_data_limits(info: Mapping[str, Any], selection: Mapping[str, Any], selectors: list[str], *,
                      dataset: str) -> None:
    """Selection settings against a prepared dataset (prepare_data's info.json), refused before use.

    n_samples must fit in the selection split, and a selector's folds need as many rows of the smallest
    class in the sample and in each stability subset. Raises ConfigError naming every broken limit.
    """
    split = selection["split"]
    counts = {int(k): int(v) for k, v in info["splits"][split]["label_counts"].items()}
    rows, n = sum(counts.values()), selection["n_samples"]
    problems = []
    if n > rows:
        problems.append(f"selection.n_samples is {n} but the {split} split of {dataset!r} has {rows} rows; "
                        f"lower it to at most {rows}")
    # The smallest class's share of a stratified draw of n rows (largest-remainder rounding gives at least
    # this), and of a stability subset drawn from those rows (at random: allow for an unlucky draw).
    smallest_class = min(n * c // rows for c in counts.values()) if rows else 0
    subset = stability_subset_size(selection) if selection.get("stability_resamples") else n
    # Selectors with a stratified k-fold (a declared ``folds``); some have no stability subsets (plugin_probe).
    for name in selectors:
        folds = _selector_setting(selection, name, "folds", selector_params(name))
        if folds is None:
            continue
        resampled = declared(name).resampled
        needed = folds if subset == n or not resampled else max(folds, int(folds * n / subset + 0.999))
        if n <= rows and needed > smallest_class:
            problems.append(f"selector {name}: {folds} folds need {folds} rows of every class in every (sub)sample, "
                            f"but the smallest class of {dataset!r} gets about {smallest_class} of the {n} samples; "
                            f"raise n_samples or lower selection.selector_params.{name}.folds")
    if problems:
        raise ConfigError(f"dataset {dataset!r}: selection limits broken:\n  " + "\n  ".join(problems))


def _selector_setting(selection: Mapping[str, Any], name: str, key: str, defaults: Mapping[str, Any]) -> Any:
    """Selector ``name``'s ``key`` as the run uses it (selector_params over its declared default); None when
    it has no such setting."""
    if key not in defaults:
        return None
    return ((selection.get("selector_params") or {}).get(name) or {}).get(key, defaults[key])


def check_llm_limits(manifest: Mapping[str, Any], selection: Mapping[str, Any], selectors: list[str]) -> None:
    """Selection settings against an LLM's size (prepare_model's model.json), refused before use."""
    hidden, name = manifest["hidden_size"], manifest["name"]
    problems = []
    if selection["n_pcs"] > hidden:
        problems.append(f"selection.n_pcs ({selection['n_pcs']}) is larger than the hidden size {hidden} of {name!r}")
    subset = stability_subset_size(selection) if selection.get("stability_resamples") else selection["n_samples"]
    for selector in selectors:
        components = _selector_setting(selection, selector, "n_components", selector_params(selector))
        if components is not None and components > min(subset, hidden):
            problems.append(f"selector {selector}: n_components {components} is more than a (sub)sample of {subset} "
                            f"rows or the hidden size {hidden} of {name!r}; lower "
                            f"selection.selector_params.{selector}.n_components")
    if problems:
        raise ConfigError(f"LLM {name!r}: selection limits broken:\n  " + "\n  ".join(problems))
