"""Successive halving (a "race") over the swept layers, replayed exactly from a finished layer sweep.

Successive halving (Jamieson & Talwalkar 2016, "Non-stochastic best arm identification and
hyperparameter optimization"), eta = 3 by default, over K layers, seeds s_1 < ... < s_S, E epochs:

- rung 0: every layer trained for ``first_epochs`` epochs on s_1; score = its best validation
  accuracy so far; keep the best ceil(n / eta) (at least 1), ties to the lower layer.
- rung 1: the survivors continue from their checkpoint to E epochs on s_1; score = best validation
  accuracy over the E epochs; keep ceil(n / eta), same tie rule.
- rung 2: the survivors are trained on the other seeds; the winner is ``pifi.stats.oracle_layer``
  over the survivors' mean (over all S seeds) best validation accuracy, lower layer on ties.

With ``first_epochs >= E`` rung 0 already trains E epochs and rung 1 only halves again (it trains
nothing); with S == 1 the final rung trains nothing. Costs, in epochs of one seed: K * min(f, E),
n1 * (E - min(f, E)) and n2 * (S - 1) * E against the sweep's K * S * E.

Training keeps its best validation epoch and has no learning-rate schedule, so a sweep run after e
epochs is exactly what a rung at e sees: its score is max(acc[:e]) of the run's ``history.json``.
Optuna's SuccessiveHalvingPruner is not used: optuna is not a dependency, and its pruner decides
per trial with asynchronous rungs (ASHA), so it cannot replay a finished sweep deterministically;
the bookkeeping here is short.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

from pifi.artifacts import read_json
from pifi.stats import oracle_layer


@dataclass(frozen=True)
class RaceSettings:
    """``eta``: keep ceil(n / eta) layers per rung (>= 2); ``first_epochs``: epochs of rung 0 (>= 1)."""

    eta: int = 3
    first_epochs: int = 1

    def __post_init__(self) -> None:
        for name, low in (("eta", 2), ("first_epochs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
                raise ValueError(f"RaceSettings.{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class Rung:
    """One rung: ``epochs`` trained by its end, the ``seeds`` its scores average over, the score of
    each layer that entered it, and the layers it kept (ascending)."""

    epochs: int
    seeds: tuple[int, ...]
    scores: dict[int, float]
    survivors: tuple[int, ...]


@dataclass(frozen=True)
class RaceResult:
    """The race's winning ``layer``, its rungs, and its cost against the full sweep's, in epochs."""

    layer: int
    rungs: tuple[Rung, ...]
    cost_epochs: int
    sweep_epochs: int

    @property
    def cost_fraction(self) -> float:
        return self.cost_epochs / self.sweep_epochs

    @property
    def cost_runs(self) -> float:  # one run = E epochs of one seed
        return self.cost_epochs / self.rungs[-1].epochs

    @property
    def sweep_runs(self) -> float:
        return self.sweep_epochs / self.rungs[-1].epochs

    def to_dict(self) -> dict:
        return {"layer": self.layer, "cost_fraction": round(self.cost_fraction, 4), "cost_runs": self.cost_runs,
                "sweep_runs": self.sweep_runs, "cost_epochs": self.cost_epochs, "sweep_epochs": self.sweep_epochs,
                "rungs": [{"epochs": r.epochs, "seeds": list(r.seeds),
                           "scores": {str(layer): score for layer, score in sorted(r.scores.items())},
                           "survivors": list(r.survivors)} for r in self.rungs]}


def keep_count(n: int, eta: int) -> int:
    """How many of ``n`` candidates a rung keeps: ceil(n / eta), at least 1."""
    if n < 1 or eta < 2:
        raise ValueError(f"keep_count needs n >= 1 candidates and eta >= 2, got n={n!r}, eta={eta!r}")
    return max(1, -(-n // eta))


def survivors(scores: Mapping[int, float], keep: int) -> tuple[int, ...]:
    """The ``keep`` best layers by score (ties to the lower layer, NaN last), sorted ascending."""
    if keep < 1:
        raise ValueError(f"a rung keeps at least one layer, got keep={keep!r}")
    ranked = sorted(scores, key=lambda layer: (math.isnan(scores[layer]), -scores[layer], layer))
    return tuple(sorted(ranked[:keep]))


def race_cost(n_layers: int, n_seeds: int, epochs: int, settings: RaceSettings = RaceSettings()) -> tuple[int, int]:
    """(race cost, sweep cost) in epochs of one seed; the survivor counts depend only on K and eta."""
    if n_layers < 1 or n_seeds < 1 or epochs < 1:
        raise ValueError(f"a race needs at least one layer, seed and epoch, got {n_layers} layers, "
                         f"{n_seeds} seeds, {epochs} epochs")
    first = min(settings.first_epochs, epochs)
    n1 = keep_count(n_layers, settings.eta)
    n2 = keep_count(n1, settings.eta)
    return n_layers * first + n1 * (epochs - first) + n2 * (n_seeds - 1) * epochs, n_layers * n_seeds * epochs


def _check(histories: Mapping[int, Mapping[int, Sequence[float]]]) -> tuple[list[int], int]:
    """The sorted seeds and the epoch count E, or a ValueError naming the layer/seed at fault."""
    if not histories:
        raise ValueError("replay needs at least one swept layer, got none")
    seeds = sorted({seed for runs in histories.values() for seed in runs})
    if not seeds:
        raise ValueError(f"no swept layer has a run (layers {sorted(histories)})")
    epochs = None
    for layer in sorted(histories):
        for seed in seeds:
            if seed not in histories[layer]:
                raise ValueError(f"layer {layer} has no run for seed {seed}, which other layers have: "
                                 "a race replays complete sweeps only")
            n = len(histories[layer][seed])
            if n == 0:
                raise ValueError(f"layer {layer}, seed {seed}: empty validation history (no epoch recorded)")
            if epochs is None:
                epochs, first = n, (layer, seed)
            elif n != epochs:
                raise ValueError(f"layer {layer}, seed {seed} has {n} epochs but layer {first[0]}, seed {first[1]} has "
                                 f"{epochs}: every run of a sweep must train the same number of epochs")
    return seeds, epochs


def rung_scores(histories: Mapping[int, Mapping[int, Sequence[float]]], upto: int) -> dict[int, float]:
    """Per layer: the mean over its seeds of each run's best validation accuracy within ``upto`` epochs
    (a run keeps its best epoch). The workflow's rungs and ``replay`` both score with this."""
    def best(accuracies: Sequence[float]) -> float:
        return float(max(accuracies[:upto], key=lambda a: (not math.isnan(a), a)))

    return {int(layer): math.fsum(best(runs[seed]) for seed in sorted(runs)) / len(runs)
            for layer, runs in sorted(histories.items())}


def cut(scores: Mapping[int, float], settings: RaceSettings = RaceSettings()) -> tuple[int, ...]:
    """The layers a rung keeps: the best ceil(n / eta) by score, ties to the lower layer."""
    return survivors(scores, keep_count(len(scores), settings.eta))


def winner(scores: Mapping[int, float]) -> int:
    """The final rung's layer: the best mean over every seed, chosen as the sweep's oracle is."""
    return oracle_layer(scores)


def replay(histories: Mapping[int, Mapping[int, Sequence[float]]],
           settings: RaceSettings = RaceSettings()) -> RaceResult:
    """Replay the race on ``histories[layer][seed]`` = validation accuracy after each epoch.

    A run's score after e epochs is max(acc[:e]) (the run keeps its best epoch); see the module
    docstring for the rungs. Raises ValueError naming the layer/seed for an incomplete sweep.
    """
    seeds, epochs = _check(histories)
    first_epochs = min(settings.first_epochs, epochs)
    candidates = tuple(sorted(histories))
    rungs = []
    for upto in (first_epochs, epochs):  # rungs 0 and 1, on the first seed
        scores = rung_scores({layer: {seeds[0]: histories[layer][seeds[0]]} for layer in candidates}, upto)
        candidates = cut(scores, settings)
        rungs.append(Rung(upto, (seeds[0],), scores, candidates))
    means = rung_scores({layer: histories[layer] for layer in candidates}, epochs)
    best = winner(means)
    rungs.append(Rung(epochs, tuple(seeds), means, (best,)))
    cost, sweep = race_cost(len(histories), len(seeds), epochs, settings)
    return RaceResult(best, tuple(rungs), cost, sweep)


def histories_from_files(history_files: Mapping[tuple[int, int], str | Path]) -> dict[int, dict[int, list[float]]]:
    """{(layer, seed): path of a run's history.json} -> ``replay``'s input, read (verified) by read_json."""
    histories: dict[int, dict[int, list[float]]] = {}
    for (layer, seed), path in sorted(history_files.items()):
        records = read_json(path).get("epochs")
        numbers = [r.get("epoch") for r in records if isinstance(r, dict)] if isinstance(records, list) else []
        if not numbers or numbers != list(range(1, len(records) + 1)):
            raise ValueError(f"{path}: 'epochs' must list the epochs 1, 2, ... in order, each with its "
                             "validation_accuracy (is it a pifi history.json?)")
        histories.setdefault(int(layer), {})[int(seed)] = [float(r["validation_accuracy"]) for r in records]
    return histories
