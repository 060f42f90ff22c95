"""Time and memory of one training step: the PiFi classifier against the base classifier.

A step is what ``pifi.training.train_classifier`` does per batch: forward under
``autocast_for(device)``, label-smoothed cross-entropy, backward, gradient clipping and an Adam
step over the trainable parameters. Both classifiers are the real MiniLM (all-MiniLM-L6-v2); PiFi
adds SmolLM2-135M's decoder layer 15, frozen, between the CLS state and the head.

Timing: both models live in this process and see the same batch; after warm-up their steps are
interleaved (A B, then B A, ...) so that the machine's slow spells hit both, and the ratio of the
medians is the result. Memory: each classifier in its own child process, three times (median
peak RSS above the RSS after imports; on CUDA also the peak allocated by torch).

    .venv/bin/python benchmarks/bench_train_step.py [--out benchmarks/results/train_step.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.utils import logging as hf_logging

from common import (MIB, RESULTS, machine_info, median, minilm_dir, peak_rss_mib, pick_device, print_table,
                    run_in_child, smollm2_dir, synchronize)
from pifi.artifacts import write_json
from pifi.model import ModelSpec, PiFiClassifier, build_classifier, count_parameters
from pifi.training import TrainingConfig, autocast_for, seed_everything

hf_logging.disable_progress_bar()

LAYER = 15
BATCH, SEQ_LEN, NUM_LABELS = 32, 64, 2
WARMUP = 3
MEMORY_STEPS = 3  # enough for Adam's state and the activations' peak to exist
MEMORY_REPEATS = 3  # the allocator moves peak RSS by tens of MiB from run to run
METHODS = ("base", "pifi")


def build(method: str, device: torch.device) -> PiFiClassifier:
    seed_everything(0)  # the same head initialisation for both
    if method == "base":
        spec = ModelSpec(method="base", slm_path=str(minilm_dir()), num_labels=NUM_LABELS, max_length=SEQ_LEN)
    else:
        spec = ModelSpec(method="pifi_ilm", slm_path=str(minilm_dir()), num_labels=NUM_LABELS, max_length=SEQ_LEN,
                         llm_path=str(smollm2_dir()), llm_layer=LAYER)
    return build_classifier(spec).to(device).train()


def make_batch(model: PiFiClassifier, device: torch.device) -> dict[str, torch.Tensor]:
    """A fixed B x T batch of random token ids, no padding: every step does the same work."""
    generator = torch.Generator().manual_seed(0)
    vocab = model.encoder.config.vocab_size
    return {"input_ids": torch.randint(1000, vocab, (BATCH, SEQ_LEN), generator=generator).to(device),
            "attention_mask": torch.ones(BATCH, SEQ_LEN, dtype=torch.long, device=device),
            "token_type_ids": torch.zeros(BATCH, SEQ_LEN, dtype=torch.long, device=device),
            "labels": torch.randint(0, NUM_LABELS, (BATCH,), generator=generator).to(device)}


class Stepper:
    """One training step exactly as ``train_classifier`` takes it (no host sync inside)."""

    def __init__(self, model: PiFiClassifier, device: torch.device):
        self.model, self.device, self.cfg = model, device, TrainingConfig()  # the paper's lr, smoothing, clip
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=self.cfg.learning_rate, fused=device.type == "cuda")
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=self.cfg.label_smoothing)

    def __call__(self, batch: dict[str, torch.Tensor]) -> None:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with autocast_for(self.device):
            logits = self.model(**inputs)
            loss = self.loss_fn(logits.float(), batch["labels"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()


def block_size(device: torch.device) -> int:
    # On a GPU one step is milliseconds and a host sync per step would be part of what we time
    # (DESIGN.md: 60 ms with per-step syncs vs 49 ms without), so time blocks of steps there.
    return 10 if device.type == "cuda" else 1


def measure_memory(method: str, device_name: str) -> dict[str, Any]:
    """Peak memory of building one classifier and training it a few steps (run in a child)."""
    device = pick_device(device_name)
    for path in (minilm_dir(), smollm2_dir()):  # import the model classes before the baseline
        MODEL_MAPPING[type(AutoConfig.from_pretrained(path))]
    if device.type == "cuda":
        torch.zeros(1, device=device)
        torch.cuda.reset_peak_memory_stats(device)
    baseline = peak_rss_mib()
    model = build(method, device)
    after_build = peak_rss_mib() - baseline
    step, batch = Stepper(model, device), make_batch(model, device)
    for _ in range(MEMORY_STEPS):
        step(batch)
    synchronize(device)
    result = {"build_rss_mib": after_build, "peak_rss_mib": peak_rss_mib() - baseline, **count_parameters(model)}
    if device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    return result


def time_steps(rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step for each method, interleaved round by round."""
    steppers = {m: Stepper(build(m, device), device) for m in METHODS}
    batch = make_batch(steppers["base"].model, device)
    for stepper in steppers.values():
        for _ in range(WARMUP):
            stepper(batch)
    synchronize(device)
    k = block_size(device)
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(rounds):
        for method in METHODS if r % 2 == 0 else METHODS[::-1]:  # alternate who goes first
            start = time.perf_counter()
            for _ in range(k):
                steppers[method](batch)
            synchronize(device)
            seconds[method].append((time.perf_counter() - start) / k)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "train_step.json", help="JSON to write")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (each: one block of steps per method)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    args = parser.parse_args()
    device = pick_device(args.device)

    # Memory first, each measurement in a fresh child, alternating the methods.
    memory: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for _ in range(MEMORY_REPEATS):
        for m in METHODS:
            memory[m].append(run_in_child(measure_memory, m, args.device))
    seconds = time_steps(args.rounds, device)

    results: dict[str, Any] = {}
    for m in METHODS:
        runs = memory[m]
        results[m] = {"trainable_params": runs[0]["trainable_params"], "total_params": runs[0]["total_params"],
                      **{k: median([r[k] for r in runs])
                         for k in ("build_rss_mib", "peak_rss_mib", "cuda_peak_mib") if k in runs[0]},
                      "memory_runs": runs, "seconds_per_step": seconds[m], "seconds_median": median(seconds[m]),
                      "seconds_min": min(seconds[m])}
    base, pifi = results["base"], results["pifi"]
    ratios = {"seconds_median": pifi["seconds_median"] / base["seconds_median"],
              # per-round ratios show how much the noise moves the headline one
              "seconds_per_round": [p / b for p, b in zip(pifi["seconds_per_step"], base["seconds_per_step"])],
              "peak_rss": pifi["peak_rss_mib"] / base["peak_rss_mib"],
              "trainable_params": pifi["trainable_params"] / base["trainable_params"],
              "total_params": pifi["total_params"] / base["total_params"]}
    if "cuda_peak_mib" in base:
        ratios["cuda_peak"] = pifi["cuda_peak_mib"] / base["cuda_peak_mib"]

    unit, scale = ("ms", 1e3) if device.type == "cuda" else ("s", 1.0)
    rows = [[m, f"{results[m]['trainable_params'] / 1e6:.2f}M", f"{results[m]['total_params'] / 1e6:.2f}M",
             f"{results[m]['seconds_median'] * scale:.3f}", f"{results[m]['peak_rss_mib']:.0f}",
             *([f"{results[m]['cuda_peak_mib']:.0f}"] if "cuda_peak_mib" in base else [])] for m in METHODS]
    rows.append(["pifi/base", f"{ratios['trainable_params']:.3f}x", f"{ratios['total_params']:.3f}x",
                 f"{ratios['seconds_median']:.3f}x", f"{ratios['peak_rss']:.3f}x",
                 *([f"{ratios['cuda_peak']:.3f}x"] if "cuda_peak" in ratios else [])])
    per_round = sorted(ratios["seconds_per_round"])
    print(f"\nbatch {BATCH} x {SEQ_LEN}, MiniLM-L6 (+ SmolLM2 layer {LAYER}), device {device}, "
          f"median of {args.rounds} rounds x {block_size(device)} step(s)")
    print_table(["method", "trainable", "total", f"{unit}/step", "peak RSS +MiB",
                 *(["CUDA peak MiB"] if "cuda_peak_mib" in base else [])], rows)
    print(f"per-round time ratio pifi/base: min {per_round[0]:.3f}, median {median(per_round):.3f}, "
          f"max {per_round[-1]:.3f}")

    write_json(args.out, {"benchmark": "train_step", "machine": machine_info(device),
                          "settings": {"batch": BATCH, "seq_len": SEQ_LEN, "num_labels": NUM_LABELS, "layer": LAYER,
                                       "rounds": args.rounds, "steps_per_block": block_size(device),
                                       "warmup_steps": WARMUP, "memory_steps": MEMORY_STEPS,
                                       "slm": str(minilm_dir()), "llm": str(smollm2_dir()),
                                       "autocast": "bf16" if device.type == "cuda" else "off (fp32)",
                                       "optimizer": "Adam" + (" (fused)" if device.type == "cuda" else "")},
                          **results, "ratios_pifi_over_base": ratios})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
