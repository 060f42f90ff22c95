"""Does the bucketed training loop give the metrics the old loop gave? Both ways on a finished demo.

The pipeline's loop (``pifi.training.train_classifier``) pads token ids once into a few length buckets
on the device and takes batches as indices. The loop it replaced tokenized per job and let a shuffling
``DataLoader`` collate each batch with ``tokenizer.pad``, to the batch's own longest row. Both draw the
same sample order from the same seed (``pifi.training.dataloader_order``), start from the same weights
and use the same optimizer, loss and clipping; only the padding widths differ, and with them the shapes
of the encoder's dropout masks, so the two runs are two draws of the same training, not one.

This script re-trains every run of a finished demo (``make demo``; ``--project``) with the old loop, on
the same rows, token ids, seeds and settings, and sets its test metrics beside the ones the pipeline
wrote (``predictions.parquet``), with the seed-to-seed standard deviation of one method as the yardstick.
For seeds the demo did not run (``--seeds``) the pipeline's loop is trained here too, as ``train.py`` runs it.
Not a speed benchmark: nothing is timed against anything.

    .venv/bin/python benchmarks/bench_loop_metrics.py --seeds 1,2,3,4,5   # after make demo: ~25 min on 2 cores
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from scipy import stats
from snakemake.utils import update_config
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from common import REPO, RESULTS, fmt, machine_info, print_table
from pifi.artifacts import read_json, read_safetensors, write_json
from pifi.evaluation import classification_metrics
from pifi.hidden import ensure_pad_token
from pifi.model import ModelSpec, build_classifier
from pifi.tokens import TokenizedSplit, capped_rows
from pifi.training import TrainingConfig, predict_proba, seed_everything, train_classifier

EVAL_ROWS_SEED = 0  # workflow/scripts/train.py: capped validation/test rows are the same for every run
CPU = torch.device("cpu")


def demo_config(configfile: Path) -> dict[str, Any]:
    """config.yaml with ``configfile`` merged over it, as Snakemake merges ``--configfile``."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(config, yaml.safe_load(configfile.read_text()))
    return config


def old_rows(split: TokenizedSplit) -> list[dict[str, Any]]:
    """The rows as the old loop's dataset held them: unpadded id lists (the cached ids: same tokenizer, same
    truncation), for ``tokenizer.pad`` to collate per batch."""
    out = []
    for row, length in enumerate(split.lengths.tolist()):
        item = {"input_ids": split.input_ids[row, :length].tolist(), "attention_mask": [1] * length,
                "labels": int(split.labels[row])}
        if split.token_type_ids is not None:
            item["token_type_ids"] = split.token_type_ids[row, :length].tolist()
        out.append(item)
    return out


@torch.inference_mode()
def old_predict(model: nn.Module, loader: DataLoader) -> np.ndarray:
    model.eval()
    return torch.cat([torch.softmax(model(**{k: v for k, v in batch.items() if k != "labels"}).float(), -1)
                      for batch in loader]).numpy()


def train_old_loop(model: nn.Module, tokenizer, train: list[dict], validation: list[dict], test: list[dict],
                   cfg: TrainingConfig) -> tuple[list[dict], int, np.ndarray]:
    """The loop before buckets, on CPU: (epoch history, best epoch, test probabilities of the best epoch)."""
    seed_everything(cfg.seed)
    collate = lambda batch: tokenizer.pad(batch, return_tensors="pt")  # noqa: E731 - the old loop's collate_fn
    train_loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate,
                              generator=torch.Generator().manual_seed(cfg.seed))
    validation_loader = DataLoader(validation, batch_size=cfg.eval_batch_size, collate_fn=collate)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history, best_accuracy, best_epoch, best_state = [], -1.0, -1, {}
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        losses = []
        for batch in train_loader:
            labels = batch.pop("labels")
            loss = loss_fn(model(**batch).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            losses.append(loss.item())
        labels = np.array([row["labels"] for row in validation])
        metrics = classification_metrics(labels, old_predict(model, validation_loader).argmax(axis=1))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                        **{f"validation_{k}": v for k, v in metrics.items()}})
        if metrics["accuracy"] > best_accuracy:
            best_accuracy, best_epoch = metrics["accuracy"], epoch
            best_state = {k: v.detach().clone() for k, v in model.trainable_state_dict().items()}
    model.load_state_dict(best_state, strict=False)
    test_loader = DataLoader(test, batch_size=cfg.eval_batch_size, collate_fn=collate)
    return history, best_epoch, old_predict(model, test_loader)


def train_bucketed(model: nn.Module, splits: Mapping[str, TokenizedSplit], cfg: TrainingConfig
                   ) -> tuple[list[dict], int, np.ndarray]:
    """The pipeline's loop, as workflow/scripts/train.py runs it, for seeds the demo did not run."""
    result = train_classifier(model, splits["train"], splits["validation"], cfg, CPU)
    model.load_state_dict(result.best_state, strict=False)
    return result.history, result.best_epoch, predict_proba(model, splits["test"], cfg.eval_batch_size, CPU)


def compare_run(run_dir: Path, seed: int, project: Path, training: Mapping[str, Any]) -> dict[str, Any]:
    """One demo run (its dataset, model and method) at ``seed``, trained the old way, beside the bucketed loop's
    result: the pipeline's own where the demo ran this seed, else trained here."""
    spec_file = read_json(run_dir / "model.json")
    run = spec_file["run"]
    tokens, meta = read_safetensors(project / "results" / "tokens" / run["dataset"] / run["slm"] / "tokens.safetensors",
                                    framework="pt")
    rows = {"train": capped_rows(len(tokens["train.lengths"]), training["max_train_samples"], seed),
            **{split: capped_rows(len(tokens[f"{split}.lengths"]), training["max_eval_samples"], EVAL_ROWS_SEED)
               for split in ("validation", "test")}}
    splits = {split: TokenizedSplit.from_tensors(tokens, split, pad_id=int(meta["pad_token_id"]),
                                                 width=training["max_length"], rows=r) for split, r in rows.items()}
    labels = splits["test"].labels.numpy()
    # Model paths in the spec are the workflow's, relative to its project directory.
    spec = ModelSpec(**{**spec_file["model"], **{key: str(project / spec_file["model"][key])
                                                 for key in ("slm_path", "llm_path") if spec_file["model"][key]}})
    tokenizer = AutoTokenizer.from_pretrained(spec.slm_path, trust_remote_code=spec.slm_trust_remote_code)
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token_id == int(meta["pad_token_id"]), "the demo's tokens came from another tokenizer"
    cfg = TrainingConfig.from_config(training, seed)
    own_run = run_dir.parent / f"seed{seed}"
    if (own_run / "predictions.parquet").exists():
        pipeline = pd.read_parquet(own_run / "predictions.parquet")
        assert np.array_equal(pipeline["label"].to_numpy(), labels), f"{own_run}: other test rows"
        history = read_json(own_run / "history.json")
        bucketed = {"source": "the demo's run", "best_epoch": history["best_epoch"], "epochs": history["epochs"],
                    "predictions": pipeline["prediction"].to_numpy()}
    else:
        seed_everything(seed)  # as train.py: the new head and projections start from the run's seed
        history, best_epoch, probabilities = train_bucketed(build_classifier(spec), splits, cfg)
        bucketed = {"source": "trained here", "best_epoch": best_epoch, "epochs": history,
                    "predictions": probabilities.argmax(axis=1)}
    seed_everything(seed)
    model = build_classifier(spec)
    started = time.perf_counter()
    history, best_epoch, probabilities = train_old_loop(
        model, tokenizer, *(old_rows(splits[split]) for split in ("train", "validation", "test")), cfg)
    old = {"best_epoch": best_epoch, "epochs": history, "seconds": time.perf_counter() - started,
           "predictions": probabilities.argmax(axis=1)}
    return {
        "dataset": run["dataset"], "method": run["method"] if run["llm_layer"] is None else f"pifi L{run['llm_layer']}",
        "seed": seed, "test_rows": len(labels),
        "same_test_predictions": float((old["predictions"] == bucketed["predictions"]).mean()),
        **{name: {**{k: v for k, v in way.items() if k != "predictions"},
                  **classification_metrics(labels, way["predictions"])}
           for name, way in (("bucketed", bucketed), ("old_loop", old))},
    }


def by_method(entries: list[dict[str, Any]], metric: str = "accuracy") -> dict[str, dict[str, float]]:
    """Per (dataset, method), each loop's mean and standard deviation over seeds: the table's cell and its noise."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault(f"{e['dataset']} / {e['method']}", []).append(e)
    def sd(values: list[float]) -> float | None:
        return float(np.std(values, ddof=1)) if len(values) > 1 else None  # one seed: no noise to measure

    return {key: {f"{way}_{stat}": fn([e[way][metric] for e in group])
                  for way in ("bucketed", "old_loop") for stat, fn in (("mean", lambda v: float(np.mean(v))), ("sd", sd))}
            for key, group in groups.items()}


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Old minus bucketed, over all runs, against the seed-to-seed noise of either loop."""
    deltas = np.array([e["old_loop"]["accuracy"] - e["bucketed"]["accuracy"] for e in entries])
    methods = by_method(entries)
    t = stats.ttest_1samp(deltas, 0.0) if len(deltas) > 1 else None
    ahead = int((deltas > 0).sum()), int((deltas < 0).sum())
    return {
        "runs": len(entries),
        "accuracy_difference_mean": float(deltas.mean()),
        "accuracy_difference_ci95": [float(v) for v in t.confidence_interval()] if t else None,
        "accuracy_difference_t_test_p": float(t.pvalue) if t else None,
        "old_loop_ahead": ahead[0], "bucketed_ahead": ahead[1],
        "sign_test_p": float(stats.binomtest(ahead[0], sum(ahead)).pvalue) if sum(ahead) else None,
        # Two independent draws of one training differ by about sqrt(2) x the seed noise.
        "accuracy_difference_sd": float(deltas.std(ddof=1)) if len(deltas) > 1 else None,
        "accuracy_seed_sd_mean": {way: float(np.mean(sds)) if (sds := [m[f"{way}_sd"] for m in methods.values()
                                                                         if m[f"{way}_sd"] is not None]) else None
                                  for way in ("bucketed", "old_loop")},
        "accuracy_by_method": methods,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=REPO / "demo", help="a finished `make demo` directory")
    parser.add_argument("--configfile", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated (default: the demo's); a seed the demo did not run is trained both ways")
    parser.add_argument("--out", type=Path, default=RESULTS / "loop_metrics.json")
    args = parser.parse_args()
    run_dirs = sorted(p.parent for p in (args.project / "results" / "runs").glob("**/predictions.parquet"))
    if not run_dirs:
        raise SystemExit(f"no finished runs under {args.project}/results/runs: run `make demo` first")
    methods: dict[Path, Path] = {}  # (dataset, method) -> its first run's folder (the spec is the same for every seed)
    for run_dir in run_dirs:
        methods.setdefault(run_dir.parent, run_dir)
    seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds
             else sorted({int(d.name.removeprefix("seed")) for d in run_dirs}))
    training = demo_config(args.configfile)["training"]
    jobs = [(run_dir, seed) for run_dir in methods.values() for seed in seeds]
    entries = []
    for i, (run_dir, seed) in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {run_dir.parent.relative_to(args.project)} seed {seed} ...", flush=True)
        e = compare_run(run_dir, seed, args.project, training)
        entries.append(e)
        print(f"  accuracy {e['bucketed']['accuracy']:.4f} bucketed ({e['bucketed']['source']}), "
              f"{e['old_loop']['accuracy']:.4f} old loop ({e['old_loop']['seconds']:.0f} s)", flush=True)
    summary = summarize(entries)
    report(entries, summary)
    write_json(args.out, {"benchmark": "loop_metrics", "machine": machine_info(CPU), "project": str(args.project),
                          "seeds": seeds, "training": dict(training), "summary": summary, "entries": entries})
    print(f"wrote {args.out}")


def report(entries: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print_table(["dataset", "method", "seed", "rows", "bucketed from", "best epoch (bucketed / old)",
                 "accuracy bucketed", "accuracy old", "macro-F1 bucketed", "macro-F1 old", "same predictions"],
                [[e["dataset"], e["method"], e["seed"], e["test_rows"], e["bucketed"]["source"],
                  f"{e['bucketed']['best_epoch']} / {e['old_loop']['best_epoch']}",
                  fmt(100 * e["bucketed"]["accuracy"], ".2f"), fmt(100 * e["old_loop"]["accuracy"], ".2f"),
                  fmt(100 * e["bucketed"]["macro_f1"], ".2f"), fmt(100 * e["old_loop"]["macro_f1"], ".2f"),
                  fmt(100 * e["same_test_predictions"], ".1f") + " %"] for e in entries])
    print()
    print_table(["dataset / method", "accuracy bucketed (mean)", "sd", "accuracy old (mean)", "sd"],
                [[key, *(fmt(None if m[f"{way}_{stat}"] is None else 100 * m[f"{way}_{stat}"], ".2f")
                         for way in ("bucketed", "old_loop") for stat in ("mean", "sd"))]
                 for key, m in summary["accuracy_by_method"].items()])
    ci = summary["accuracy_difference_ci95"] or [float("nan")] * 2
    noise = summary["accuracy_seed_sd_mean"]
    print(f"old - bucketed accuracy over {summary['runs']} runs: mean {100 * summary['accuracy_difference_mean']:+.2f} "
          f"pts (95% CI {100 * ci[0]:+.2f} to {100 * ci[1]:+.2f}; old ahead in {summary['old_loop_ahead']}, "
          f"bucketed in {summary['bucketed_ahead']}); seed-to-seed sd of one method: "
          + ", ".join(f"{fmt(None if v is None else 100 * v, '.2f')} pts {way}" for way, v in noise.items()))


if __name__ == "__main__":
    main()
