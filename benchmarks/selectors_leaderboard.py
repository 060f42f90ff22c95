"""The selector leaderboard: every selector judged against the PiFi layer sweep of a finished project.

    make leaderboard        # runs the project (configs/leaderboard.yaml) under leaderboard/, then this
    .venv/bin/python benchmarks/selectors_leaderboard.py leaderboard [--out FILE] [--load TEXT]

Per dataset and selector, from the project's summary (``selectors.csv``), score files and runs:
the chosen layer, regret (oracle's test accuracy - the chosen layer's, points) with its paired
bootstrap interval, Spearman rho and Kendall tau with the sweep's validation accuracy, whether the
oracle is among the selector's 3 best-scored swept layers, and its cost in seconds next to one PiFi
training run. The oracle is the best *swept* layer, so a selector chooses among the same layers:
``layer`` is its best-scored swept layer (``layer_any`` its choice over every layer), and every
regret comes from the sweep's own runs. Across datasets: each selector against ``ilm_pc_patching``
(the seed's score, the default), a paired bootstrap of test accuracy between their two layers.

Costs: a state selector pays the hidden-state extraction job (Snakemake's ``benchmark:`` file) plus
its own scoring, timed here on the cached states without stability resamples; ``plugin_probe`` pays
its CLS-vector job and its scoring job (both ``benchmark:`` files, start-up included); the baselines
cost nothing. A PiFi training run is the mean ``train`` job of the sweep.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pifi.artifacts import read_json, write_json
from pifi.hidden import load_states
from pifi.selectors import PLUGIN_PROBE, best_layer, score_layers
from pifi.stats import compare, in_top, kendall, spearman
from pifi.summary import correctness, load_runs

from common import RESULTS, machine_info

BASELINES = ("first", "last", "middle")
REFERENCE = "ilm_pc_patching"


def job_seconds(path: Path) -> float:
    """Wall seconds of one job from Snakemake's benchmark file."""
    return float(pd.read_csv(path, sep="\t")["s"].iloc[0])


class Project:
    """Paths of one finished (dataset, SLM, LLM) chain of the leaderboard project."""

    def __init__(self, root: Path, dataset: str, slm: str, llm: str):
        self.results, self.dataset, self.slm, self.llm = root / "results", dataset, slm, llm
        self.selection = self.results / "selection" / dataset

    def scores(self, name: str) -> dict:
        if name == REFERENCE:
            effects = read_json(self.selection / self.slm / self.llm / "effects.json")
            return {"scores": effects["effects"],
                    "params": {"n_pcs": effects["n_pcs"], "top_pc": effects["top_pc"], "lambdas": effects["lambdas"]}}
        folder = self.selection / (f"{self.slm}/{self.llm}" if name == PLUGIN_PROBE else self.llm) / "scores"
        return read_json(folder / f"{name}.json")

    def seconds(self, *parts: str) -> float:
        return job_seconds(self.results.joinpath("benchmarks", *parts))


def dataset_entry(project: Project, rows: pd.DataFrame, runs: pd.DataFrame, swept: list[int]) -> dict:
    p = project
    pifi = runs[(runs["dataset"] == p.dataset) & (runs["method"] == "pifi")]
    by_layer = {int(layer): frame for layer, frame in pifi.groupby("llm_layer")}
    seeds = sorted(int(s) for s in pifi["seed"].unique())
    val_by_layer = {layer: float(by_layer[layer]["validation_accuracy"].mean()) for layer in swept}
    oracle = int(rows["oracle_layer"].iloc[0])
    oracle_correct = correctness(by_layer[oracle])
    train_runs = [p.seconds("runs", p.dataset, p.slm, "pifi", p.llm, f"layer{layer}", f"seed{seed}", "train.tsv")
                  for layer in swept for seed in seeds]
    one_run = float(np.mean(train_runs))
    extraction = p.seconds("hidden", p.dataset, f"{p.llm}.tsv")
    states, labels = load_states(p.results / "hidden" / p.dataset / p.llm / "states.safetensors")

    def judged(scores: list[float]) -> dict:
        layer = swept[best_layer([scores[s] for s in swept])]
        regret = compare(oracle_correct, correctness(by_layer[layer]))
        return {"layer": layer, "regret": _points(regret.difference),
                "regret_ci": [_points(regret.low), _points(regret.high)], "regret_significant": regret.significant,
                "rho": _rounded(spearman(scores, val_by_layer)), "tau": _rounded(kendall(scores, val_by_layer)),
                "top3": in_top(3, oracle, scores, swept)}

    selectors = {}
    for row in rows.itertuples():
        name, report = row.selector, p.scores(row.selector)
        if name == PLUGIN_PROBE:
            seconds = p.seconds("features", p.dataset, f"{p.slm}.tsv") + p.seconds(
                "selection", p.dataset, p.slm, p.llm, f"{name}.tsv")
        elif name in BASELINES:
            seconds = 0.0
        else:
            started = time.perf_counter()
            score_layers(name, states, labels, **report["params"])
            seconds = extraction + time.perf_counter() - started
        selectors[name] = {**judged(report["scores"]), "layer_any": int(row.layer), "seconds": round(seconds, 1),
                           "seconds_per_training_run": round(seconds / one_run, 3)}
    # Each selector's layer against the reference's, paired over test rows and seeds: > 0 = better than it.
    reference = correctness(by_layer[selectors[REFERENCE]["layer"]])
    for result in selectors.values():
        versus = compare(correctness(by_layer[result["layer"]]), reference)
        result["vs_ilm_pc_patching"] = {"difference": _points(versus.difference),
                                        "ci": [_points(versus.low), _points(versus.high)],
                                        "significant": versus.significant}
    # plugin_probe scored by held-out loss instead of accuracy: the same trained plug-ins, a smoother score.
    losses = p.scores(PLUGIN_PROBE)["details"]["held_out_loss"]
    return {"oracle_layer": oracle, "swept_layers": swept, "seeds": seeds,
            "validation_accuracy_by_layer": {str(k): round(v, 4) for k, v in val_by_layer.items()},
            "one_training_run_seconds": round(one_run, 1), "sweep_seconds": round(float(np.sum(train_runs)), 1),
            "selectors": selectors, "plugin_probe_loss_variant": judged([-loss for loss in losses])}


def _points(value: float) -> float:
    return round(100 * float(value), 2)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def overall(entries: dict[str, dict]) -> dict[str, dict]:
    """Per selector over datasets: mean regret, rho, tau, top-3 count, datasets where it beat the reference."""
    names = list(dict.fromkeys(name for entry in entries.values() for name in entry["selectors"]))
    table = {}
    for name in names:
        rows = [entry["selectors"][name] for entry in entries.values() if name in entry["selectors"]]
        versus = [r["vs_ilm_pc_patching"] for r in rows]
        table[name] = {
            "mean_regret": round(float(np.mean([r["regret"] for r in rows])), 2),
            "significant_regret": sum(r["regret_significant"] for r in rows),
            "mean_rho": _mean([r["rho"] for r in rows]), "mean_tau": _mean([r["tau"] for r in rows]),
            "top3": sum(bool(r["top3"]) for r in rows), "datasets": len(rows),
            "better_than_ilm_pc_patching": sum(v["difference"] > 0 for v in versus),
            "significantly_better": sum(v["significant"] and v["difference"] > 0 for v in versus),
            "mean_seconds": round(float(np.mean([r["seconds"] for r in rows])), 1),
            "mean_seconds_per_training_run": round(float(np.mean([r["seconds_per_training_run"] for r in rows])), 3)}
    return table


def markdown(report: dict) -> str:
    """The README's table: per selector, regret per dataset (* = interval excludes 0), mean rho and tau,
    oracle in top 3, cost relative to one PiFi training run."""
    datasets = report["datasets"]
    head = ["selector", *[f"{d} regret" for d in datasets], "mean ρ", "mean τ", "oracle in top 3", "cost / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(report["overall"], key=lambda name: report["overall"][name]["mean_regret"])
    for name in order:
        cells = [f"`{name}`"]
        for dataset in datasets:
            r = report[dataset][name]
            cells.append(f"{r['regret']:+.1f}{'*' if r['regret_significant'] else ''} (L{r['layer']})")
        o = report["overall"][name]
        cells += [_signed(o["mean_rho"]), _signed(o["mean_tau"]), f"{o['top3']}/{o['datasets']}",
                  f"{o['mean_seconds_per_training_run']:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="the finished leaderboard project (snakemake --directory)")
    parser.add_argument("--out", type=Path, default=RESULTS / "selectors_leaderboard.json")
    parser.add_argument("--load", default="quiet", help="what else ran on the machine meanwhile (recorded)")
    args = parser.parse_args()
    results = args.project / "results"
    selectors = pd.read_csv(results / "summary" / "selectors.csv")
    layers = pd.read_csv(results / "summary" / "layers.csv")
    runs = load_runs(sorted(results.glob("runs/*/*/pifi/*/layer*/seed*/metrics.json")))
    entries = {}
    for (dataset, slm, llm), rows in selectors.groupby(["dataset", "slm", "llm"], sort=True):
        mine = layers[(layers["dataset"] == dataset) & (layers["slm"] == slm) & (layers["llm"] == llm)]
        swept = sorted(int(layer) for layer in mine.loc[mine["swept"], "layer"])
        entries[dataset] = dataset_entry(Project(args.project, dataset, slm, llm), rows, runs, swept)
        print(f"{dataset}: oracle layer {entries[dataset]['oracle_layer']}, one training run "
              f"{entries[dataset]['one_training_run_seconds']} s", flush=True)
    report = {"datasets": sorted(entries), "machine": {**machine_info(torch.device("cpu")), "load": args.load},
              "project": str(args.project), "overall": overall(entries)}
    # Per dataset, per selector: layer, regret, regret_ci, rho, tau, top3, seconds (and more); the dataset's
    # oracle, sweep and costs under "sweeps".
    report["sweeps"] = {dataset: {k: v for k, v in entry.items() if k != "selectors"} for dataset, entry in entries.items()}
    for dataset, entry in entries.items():
        report[dataset] = entry["selectors"]
    write_json(args.out, report)
    print(json.dumps(report["overall"], indent=1))
    print(markdown(report))


if __name__ == "__main__":
    main()
