"""Selector score files and the selection file: what each selector chose, and how clearly.

Every selector's file holds the same keys (``selector``, ``scores``, ``best_layer``, runner-up and
margin, ``converged``, ``stability``); the reference experiment's ``effects.json`` holds them too, after its own.
``selection.json`` records every selector's choice and which one drives ``pifi_ilm``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pifi.selectors import best_layer
from pifi.selectors import selection_margin as margin  # one runner-up rule for every selector


def scores_report(selector: str, scores: Sequence[float], *, converged: Sequence[bool] | None,
                  stability: Mapping[str, Any] | None, params: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """One selector's score file."""
    scores = [float(s) for s in scores]
    return {"selector": selector, **fields, "params": dict(params), "scores": scores,
            "best_layer": best_layer(scores), **margin(scores), "num_layers": len(scores),
            "converged": None if converged is None else [bool(c) for c in converged],
            "stability": None if stability is None else dict(stability)}


def unconverged_layers(converged: Sequence[bool] | None) -> list[int]:
    return [] if converged is None else [layer for layer, ok in enumerate(converged) if not ok]


CHOICE_RULES = ("argmax", "modal")


def choice(report: Mapping[str, Any], rule: str = "argmax") -> dict[str, Any]:
    """What one selector chose, from its score file (the reference experiment's effects.json included).

    ``rule`` (selection.choice): ``argmax`` = the best-scored layer; ``modal`` = the layer that won most
    stability resamples, where there are some (else the best-scored: a selector without resamples, or
    none valid). ``argmax_layer`` is always the best-scored one.
    """
    if rule not in CHOICE_RULES:
        raise ValueError(f"selection.choice must be one of {CHOICE_RULES}, not {rule!r}")
    scores = report["scores"]
    argmax = best_layer(scores)
    stability = report.get("stability") or {}
    win_rate, modal = stability.get("win_rate"), stability.get("modal_layer")
    layer = modal if rule == "modal" and modal is not None else argmax
    return {"layer": layer, "argmax_layer": argmax, "score": scores[layer], **margin(scores),
            "num_layers": len(scores), "win_rate": None if win_rate is None else win_rate[layer],
            "modal_layer": modal, "rule": rule}


def selection_record(reports: Mapping[str, Mapping[str, Any]], selector: str, *, dataset: str, slm: str,
                     llm: str, rule: str = "argmax") -> dict[str, Any]:
    """selection.json: the driving selector's layer first, then every selector's choice (by ``rule``)."""
    if selector not in reports:
        raise ValueError(f"selector {selector!r} has no scores; computed: {sorted(reports)}")
    choices = {name: choice(report, rule) for name, report in reports.items()}
    driving = choices[selector]
    return {"dataset": dataset, "slm": slm, "llm": llm, "selector": selector, "layer": driving["layer"],
            **{k: v for k, v in driving.items() if k != "layer"}, "choices": choices}
