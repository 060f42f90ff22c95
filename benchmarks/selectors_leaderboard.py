"""The selector leaderboard: every selector, and a race, judged against the PiFi layer sweep of a finished project.

    make leaderboard        # runs the project (configs/leaderboard.yaml) under leaderboard/, then this
    .venv/bin/python benchmarks/selectors_leaderboard.py leaderboard [--out FILE] [--load TEXT]

One judge: the oracle, each layer's validation gap to it, the layers *tied with the best* and every
regret come from ``pifi.summary`` (``sweep_judge``, ``regret``, ``is_tied``), the code behind
``summary.md``; the race is ``pifi.race.replay`` on the sweep's per-epoch histories.

Per dataset: the majority class's share of the validation rows (``majority_accuracy``), whether the
sweep learned anything (``informative``: the best swept layer >= 5 points above it on validation),
the rows judged on, the oracle and the tied set. Per selector: its layer (its best-scored *swept*
layer, as the oracle is the best swept layer), regret on test with its paired interval, ``tied`` (its
layer is tied with the best: a *hit*), Spearman rho and Kendall tau with the sweep's validation
accuracy, oracle in its top 3, and its cost next to one PiFi training run. Variants judged beside the
selectors: ``<selector>+modal`` (the swept layer that won most stability resamples, selection.choice:
modal) and ``plugin_probe+loss`` (the same trained plug-ins scored by held-out loss; likewise for
``plugin_probe_finetuned``, whose cost includes the base run it reads). Across datasets,
only informative ones count, and the rule for changing the defaults is applied as stated in the README.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pifi.artifacts import read_json, read_parquet, write_json
from pifi.hidden import load_states
from pifi.race import RaceSettings, histories_from_files, replay
from pifi.selectors import NOTHING, PATCHING, PLUGGED, best_layer, declared, score_layers
from pifi.selectors.plugin_probe import features_suffix, reads_finetuned
from pifi.stats import in_top, kendall, spearman
from pifi.summary import Bootstrap, is_tied, load_runs, read_selections, regret, sweep_judge

from common import RESULTS, machine_info

INFORMATIVE_POINTS = 0.05  # the best swept layer must beat the majority class by this much on validation
RACE_COST_LIMIT = 0.35     # the race replaces the sweep only at or below this share of its cost


def job_seconds(path: Path) -> float:
    """Wall seconds of one job from Snakemake's benchmark file."""
    return float(pd.read_csv(path, sep="\t")["s"].iloc[0])


class Project:
    """Paths of one finished (dataset, SLM, LLM) chain of the leaderboard project."""

    def __init__(self, root: Path, dataset: str, slm: str, llm: str):
        self.results, self.dataset, self.slm, self.llm = root / "results", dataset, slm, llm
        self.selection = self.results / "selection" / dataset

    def scores(self, name: str) -> dict:
        if name == PATCHING:
            effects = read_json(self.selection / self.slm / self.llm / "effects.json")
            return {"scores": effects["effects"], "stability": effects.get("stability"),
                    "params": {"n_pcs": effects["n_pcs"], "top_pc": effects["top_pc"], "lambdas": effects["lambdas"]}}
        folder = self.selection / (f"{self.slm}/{self.llm}" if declared(name).reads == PLUGGED else self.llm) / "scores"
        return read_json(folder / f"{name}.json")

    def seconds(self, *parts: str) -> float:
        return job_seconds(self.results.joinpath("benchmarks", *parts))

    def run_dir(self, layer: int, seed: int) -> Path:
        return self.results / "runs" / self.dataset / self.slm / "pifi" / self.llm / f"layer{layer}" / f"seed{seed}"


def majority_accuracy(labels: np.ndarray) -> float:
    """The share of the most frequent class: what always answering it scores."""
    return float(np.bincount(labels).max() / len(labels))


def modal_swept_layer(win_rate: list[float], swept: list[int]) -> int:
    """The swept layer that won most stability resamples (the lowest on ties)."""
    return swept[best_layer([win_rate[layer] for layer in swept])]


def dataset_entry(project: Project, judge: dict, swept: list[int], boot: Bootstrap) -> dict:
    p = project
    by_layer, oracle, gaps, val_by_layer = judge["by_layer"], judge["oracle"], judge["gaps"], judge["validation"]
    seeds = sorted(int(s) for s in by_layer[oracle]["seed"])
    validation = read_parquet(p.run_dir(oracle, seeds[0]) / "validation_predictions.parquet", columns=["label"])
    test = read_parquet(p.run_dir(oracle, seeds[0]) / "predictions.parquet", columns=["label"])
    majority = majority_accuracy(validation["label"].to_numpy())
    best = max(val_by_layer.values())
    train_runs = [p.seconds("runs", p.dataset, p.slm, "pifi", p.llm, f"layer{layer}", f"seed{seed}", "train.tsv")
                  for layer in swept for seed in seeds]
    one_run = float(np.mean(train_runs))
    extraction = p.seconds("hidden", p.dataset, f"{p.llm}.tsv")
    states, labels = load_states(p.results / "hidden" / p.dataset / p.llm / "states.safetensors")

    def judged_layer(layer: int) -> dict:
        lost = regret(by_layer, oracle, layer, boot)
        return {"layer": layer, "tied": is_tied(gaps[layer]), "regret": _points(lost.difference),
                "regret_ci": [_points(lost.low), _points(lost.high)], "regret_significant": lost.significant}

    def judged(scores: list[float]) -> dict:
        return {**judged_layer(swept[best_layer([scores[s] for s in swept])]),
                "rho": _rounded(spearman(scores, val_by_layer)), "tau": _rounded(kendall(scores, val_by_layer)),
                "top3": in_top(3, oracle, scores, swept)}

    selectors, variants = {}, {}
    selection = read_json(p.selection / p.slm / p.llm / "selection.json")
    for name in selection["choices"]:
        report = p.scores(name)
        if declared(name).reads == PLUGGED:  # its CLS vectors and the plug-ins it trains
            params = report["params"]
            seconds = (p.seconds("features", p.dataset, f"{p.slm}{features_suffix(params)}.tsv")
                       + p.seconds("selection", p.dataset, p.slm, p.llm, f"{name}.tsv"))
            if reads_finetuned(params):  # + the base run whose encoder gives them
                seconds += p.seconds("runs", p.dataset, p.slm, "base", f"seed{seeds[0]}", "train.tsv")
        elif declared(name).reads == NOTHING:
            seconds = 0.0
        else:
            started = time.perf_counter()
            score_layers(name, states, labels, **report["params"])
            seconds = extraction + time.perf_counter() - started
        cost = {"seconds": round(seconds, 1), "seconds_per_training_run": round(seconds / one_run, 3)}
        selectors[name] = {**judged(report["scores"]), **cost}
        win_rate = (report.get("stability") or {}).get("win_rate")
        if win_rate is not None:  # selection.choice: modal
            variants[f"{name}+modal"] = {**judged_layer(modal_swept_layer(win_rate, swept)), **cost}
        if declared(name).reads == PLUGGED:  # the same trained plug-ins scored by held-out loss (score: loss)
            losses = report["details"]["held_out_loss"]
            variants[f"{name}+loss"] = {**judged([-loss for loss in losses]), **cost}
    histories = histories_from_files({(layer, seed): p.run_dir(layer, seed) / "history.json"
                                      for layer in swept for seed in seeds})
    race = replay(histories, RaceSettings())
    return {"oracle_layer": oracle, "swept_layers": swept, "seeds": seeds,
            "validation_rows": len(validation), "test_rows": len(test),
            "majority_accuracy": round(majority, 4), "best_validation_accuracy": round(best, 4),
            "informative": bool(best - majority >= INFORMATIVE_POINTS - 1e-12),
            "tied_layers": judge["tied"],
            "validation_accuracy_by_layer": {str(k): round(v, 4) for k, v in val_by_layer.items()},
            "one_training_run_seconds": round(one_run, 1), "sweep_seconds": round(float(np.sum(train_runs)), 1),
            "race": {**judged_layer(race.layer), "cost_fraction": round(race.cost_fraction, 4),
                     "cost_runs": race.cost_runs, "sweep_runs": race.sweep_runs,
                     "rungs": race.to_dict()["rungs"]},
            "selectors": selectors, "variants": variants}


def _points(value: float) -> float:
    return round(100 * float(value), 2)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 3) if values else None


def overall(entries: dict[str, dict]) -> dict[str, dict]:
    """Per selector (and variant, and the race) over the *informative* datasets: hits (tied with the best),
    mean regret, mean rho and tau, top-3 count, mean cost."""
    informative = {d: e for d, e in entries.items() if e["informative"]}
    rows_by_name: dict[str, list[dict]] = {}
    for entry in informative.values():
        for name, row in {**entry["selectors"], **entry["variants"], "race": entry["race"]}.items():
            rows_by_name.setdefault(name, []).append(row)
    table = {}
    for name, rows in rows_by_name.items():
        table[name] = {"hits": sum(bool(r["tied"]) for r in rows), "datasets": len(rows),
                       "mean_regret": round(float(np.mean([r["regret"] for r in rows])), 2),
                       "significant_regret": sum(r["regret_significant"] for r in rows),
                       "mean_rho": _mean([r.get("rho") for r in rows]), "mean_tau": _mean([r.get("tau") for r in rows]),
                       "top3": sum(bool(r.get("top3")) for r in rows)}
        if name == "race":
            table[name]["max_cost_fraction"] = max(r["cost_fraction"] for r in rows)
        else:
            table[name]["mean_seconds_per_training_run"] = round(float(np.mean(
                [r["seconds_per_training_run"] for r in rows])), 3)
    return table


def default_rule(table: dict[str, dict], n_informative: int, selectors: list[str]) -> dict:
    """The rule stated before the run (README): the race replaces pifi_sweep in config.yaml if it hits every
    informative dataset at <= 35% of the sweep's cost; a selector becomes the default if it hits every
    informative dataset and no other selector hits as many with a higher mean rho."""
    race = table.get("race")
    race_wins = bool(n_informative and race and race["hits"] == n_informative
                     and race["max_cost_fraction"] <= RACE_COST_LIMIT)
    everywhere = [name for name in selectors if name in table and n_informative
                  and table[name]["hits"] == n_informative]
    rho = {name: table[name]["mean_rho"] if table[name]["mean_rho"] is not None else -np.inf for name in selectors
           if name in table}
    winner = next((name for name in sorted(everywhere, key=lambda n: -rho[n])
                   if not any(table[o]["hits"] >= n_informative and rho[o] > rho[name] for o in rho if o != name)),
                  None)
    return {"informative_datasets": n_informative, "race_replaces_sweep": race_wins, "default_selector": winner}


def markdown(report: dict) -> str:
    """The README's table: per selector, regret per dataset (* = interval excludes 0; ✓ = tied with the best),
    hits on informative datasets, mean rho, cost relative to one PiFi training run."""
    datasets = report["datasets"]
    sweeps = report["sweeps"]
    head = ["selector", *[f"{d}{'' if sweeps[d]['informative'] else ' (uninformative)'}" for d in datasets],
            "hits", "mean ρ", "cost / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines.append("| majority / best val | " + " | ".join(
        f"{100 * sweeps[d]['majority_accuracy']:.1f} / {100 * sweeps[d]['best_validation_accuracy']:.1f}"
        for d in datasets) + " | | | |")
    lines.append("| tied with the best | " + " | ".join(
        ", ".join(map(str, sweeps[d]["tied_layers"])) for d in datasets) + " | | | |")
    o = report["overall"]
    order = sorted(o, key=lambda name: (-o[name]["hits"], o[name]["mean_regret"]))
    for name in order:
        cells = [f"`{name}`"]
        for dataset in datasets:
            r = sweeps[dataset]["race"] if name == "race" else report[dataset].get(name)
            cells.append("-" if r is None else f"{r['regret']:+.1f}{'*' if r['regret_significant'] else ''} "
                                               f"(L{r['layer']}{' ✓' if r['tied'] else ''})")
        cost = (f"{100 * o[name]['max_cost_fraction']:.0f}% of the sweep" if name == "race"
                else f"{o[name]['mean_seconds_per_training_run']:.2f}x")
        mean_rho = o[name]["mean_rho"]
        cells += [f"{o[name]['hits']}/{o[name]['datasets']}", "-" if mean_rho is None else f"{mean_rho:+.2f}", cost]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def merge_boards(entries: dict[str, dict], boards: list[Path]) -> dict[str, dict]:
    """Add to ``entries`` the datasets of earlier boards that this project did not run (a board is
    hours of CPU: one dataset can run per session or machine), each as that board judged it; returns
    where each came from (file, commit, date), so that the means and the rule say what they rest on."""
    merged = {}
    for path in boards:
        board = read_json(path)
        for dataset in board["datasets"]:
            if dataset in entries:
                continue  # this project's own judgement wins
            rows = board[dataset]
            entries[dataset] = {**board["sweeps"][dataset],
                                "selectors": {k: v for k, v in rows.items() if "+" not in k},
                                "variants": {k: v for k, v in rows.items() if "+" in k}}
            merged[dataset] = {"file": path.name, "git_commit": board["machine"].get("git_commit"),
                               "date_utc": board["machine"].get("date_utc"), "load": board["machine"].get("load")}
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="the finished leaderboard project (snakemake --directory)")
    parser.add_argument("--out", type=Path, default=RESULTS / "selectors_leaderboard.json")
    parser.add_argument("--load", default="quiet", help="what else ran on the machine meanwhile (recorded)")
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="earlier boards (this script's JSON, the same recipe) whose datasets this project lacks")
    args = parser.parse_args()
    results = args.project / "results"
    # Judged on what the summary was computed from (its runs, selections and bootstrap), not on whatever
    # else the directory holds: paths in runs.json are relative to the project.
    used = read_json(results / "summary" / "runs.json")
    boot = Bootstrap(**used["statistics"])
    layers = read_parquet(results / "summary" / "layers.parquet")
    runs = load_runs([args.project / path for path in used["metrics"]])
    selections = read_selections([args.project / path for path in used["selections"]])
    for key in selections:  # the swept layers, as the summary recorded them
        mine = layers[(layers["dataset"] == key[0]) & (layers["slm"] == key[1]) & (layers["llm"] == key[2])]
        selections[key]["swept_layers"] = sorted(int(layer) for layer in mine.loc[mine["swept"], "layer"])
    judged = sweep_judge(runs, selections, boot)
    entries = {}
    for (dataset, slm, llm), judge in sorted(judged.items()):
        swept = selections[(dataset, slm, llm)]["swept_layers"]
        entries[dataset] = dataset_entry(Project(args.project, dataset, slm, llm), judge, swept, boot)
        e = entries[dataset]
        print(f"{dataset}: majority {e['majority_accuracy']:.3f}, best validation {e['best_validation_accuracy']:.3f}"
              f" ({'informative' if e['informative'] else 'uninformative'}), oracle layer {e['oracle_layer']}, tied "
              f"{e['tied_layers']}, race layer {e['race']['layer']} at {e['race']['cost_fraction']:.0%}; one training "
              f"run {e['one_training_run_seconds']} s", flush=True)
    merged = merge_boards(entries, args.merge)
    table = overall(entries)
    selectors = list(dict.fromkeys(name for entry in entries.values() for name in entry["selectors"]))
    report = {"datasets": sorted(entries), "machine": {**machine_info(torch.device("cpu")), "load": args.load},
              "project": str(args.project), "merged": merged, "overall": table,
              "rule": default_rule(table, sum(e["informative"] for e in entries.values()), selectors)}
    # Per dataset, per selector: layer, tied, regret, regret_ci, rho, tau, top3, seconds; the dataset's
    # majority, rows, oracle, tied set, race and costs under "sweeps".
    report["sweeps"] = {dataset: {k: v for k, v in entry.items() if k not in ("selectors", "variants")}
                        for dataset, entry in entries.items()}
    for dataset, entry in entries.items():
        report[dataset] = {**entry["selectors"], **entry["variants"]}
    write_json(args.out, report)
    print(json.dumps({"overall": report["overall"], "rule": report["rule"]}, indent=1))
    print(markdown(report))


if __name__ == "__main__":
    main()
