"""One training step, timed side by side in the reference's style and the project's, eager and compiled.

Every variant trains the same classifier (the same weights: each model instance is built from the
same seed) on the same rows, and they take turns, round by round:

    reference         the public reference's habits: fp32 (no autocast), a DataLoader over tokenized
                      rows collated by ``tokenizer.pad`` on the host every step, ``loss.item()`` and a
                      scikit-learn F1 of the batch's argmax every step, Adam as constructed by default
                      (not fused); the same loss (label smoothing) and clipping as the project
    project           the step exactly as ``pifi.training.train_classifier`` takes it per batch:
                      a bucketed batch from ``pifi.tokens.batches`` (an index into the padded id matrix
                      on the device, the mask made there), ``autocast_for(device)``, clip, Adam (fused on
                      CUDA), no host sync but the loss mean once per epoch
    project_compiled  the same through ``pifi.training.compiled`` (CUDA graphs on GPU, inductor on CPU)
    bare              project's step, same model and optimizer, on one fixed batch: no data path
    bare_compiled     the same for project_compiled
    base              project's step on the base classifier (the SLM alone)

Ratios (each of medians, plus the spread of the per-round ratios): reference/project and
reference/project_compiled (what the project's habits buy), project/project_compiled (what
compiling buys), pifi/base = project/base (what the plugged layer costs), in_pipeline/bare =
project/bare and project_compiled/bare_compiled (what the data path costs per step). Memory: the
base and PiFi classifiers, each in its own child process (peak RSS; on CUDA peak allocated).

    .venv/bin/python benchmarks/bench_train_step.py                                # CPU: MiniLM, 32 x 64
    .venv/bin/python benchmarks/bench_train_step.py --device cuda --model bert-base  # GPU: the targets
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.utils import logging as hf_logging

from common import (MIB, RESULTS, machine_info, made_once, median, minilm_dir, paired_ratio, peak_rss_mib,
                    pick_device, print_table, run_in_child, smollm2_dir, synchronize)
from pifi.artifacts import write_json
from pifi.model import ModelSpec, PiFiClassifier, build_classifier, count_parameters
from pifi.tokens import TokenizedSplit, batches, length_buckets
from pifi.training import TrainingConfig, autocast_for, compile_wanted, compiled, seed_everything

hf_logging.disable_progress_bar()

BATCH, NUM_LABELS = 32, 2
STEPS_PER_EPOCH = 20       # rows = 20 batches; a multiple of the CUDA block, so an epoch's sync ends a block
WARMUP = 3                 # eager steps before timing
WARMUP_COMPILED = 5        # the first compiles; CUDA graphs are recorded on the next calls
MEMORY_STEPS = 3           # enough for Adam's state and the activations' peak to exist
INPUT_KEYS = ("input_ids", "token_type_ids", "attention_mask")
CPU_COMPILE_SECONDS = {"tiny": 65, "minilm": 75}  # measured here (2 busy cores): first compiled step

# BERT-base: BertConfig's defaults (12 layers, hidden 768, 12 heads, intermediate 3072, vocab 30,522).
BERT_BASE_SHAPE: dict[str, Any] = {}
# Qwen2-0.5B's layer shape; only 2 layers and a small vocabulary are saved, as one layer is all we use.
QWEN2_05B_LAYER_SHAPE = dict(hidden_size=896, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2,
                             num_hidden_layers=2, vocab_size=1024, rms_norm_eps=1e-6, tie_word_embeddings=True,
                             max_position_embeddings=32768, rope_parameters={"rope_theta": 1e6, "rope_type": "default"})
TINY_BERT_SHAPE = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512)
TINY_QWEN2_SHAPE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2,
                        num_hidden_layers=2, vocab_size=1024)


# ---------------------------------------------------------------- models

def _bert_config_saver(shape: dict[str, Any]) -> Callable[[Path], None]:
    def save(folder: Path) -> None:
        from transformers import BertConfig

        BertConfig(**shape).save_pretrained(folder)  # weights are drawn at build time, from the seed
    return save


def _qwen2_saver(shape: dict[str, Any]) -> Callable[[Path], None]:
    def save(folder: Path) -> None:
        from transformers import AutoModelForCausalLM, Qwen2Config

        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(Qwen2Config(**shape), dtype=torch.bfloat16).save_pretrained(folder)
    return save


@dataclass(frozen=True)
class Setup:
    """The classifier under test: SLM, LLM and plugged layer, and the batch shape."""

    name: str
    slm: Path
    llm: Path
    layer: int
    seq_len: int
    pretrained: bool  # the SLM's weights from its checkpoint; else random, drawn from the seed
    description: str


def make_setup(name: str) -> Setup:
    if name == "minilm":
        return Setup(name, minilm_dir(), smollm2_dir(), 15, 64, True,
                     "all-MiniLM-L6-v2 (real weights) + SmolLM2-135M decoder layer 15")
    if name == "bert-base":
        slm = made_once("bert-base-shaped", _bert_config_saver(BERT_BASE_SHAPE), "a BERT-base config")
        llm = made_once("qwen2-0.5b-shaped-2-layers", _qwen2_saver(QWEN2_05B_LAYER_SHAPE),
                        "a random Qwen2-0.5B-shaped checkpoint with 2 layers")
        return Setup(name, slm, llm, 1, 100, False,
                     "BERT-base-shaped (random) + Qwen2-0.5B-shaped decoder layer 1 (random)")
    if name == "tiny":
        slm = made_once("tiny-bert", _bert_config_saver(TINY_BERT_SHAPE), "a tiny BERT config")
        llm = made_once("tiny-qwen2", _qwen2_saver(TINY_QWEN2_SHAPE), "a tiny random Qwen2 checkpoint")
        return Setup(name, slm, llm, 1, 64, False, "tiny BERT (2 x 128, random) + tiny Qwen2 layer 1 (256, random)")
    raise SystemExit(f"unknown model {name!r}")


def build(method: str, setup: Setup, device: torch.device) -> PiFiClassifier:
    seed_everything(0)  # the same weights for every instance of a method
    plug = {} if method == "base" else {"llm_path": str(setup.llm), "llm_layer": setup.layer}
    spec = ModelSpec(method="base" if method == "base" else "pifi_ilm", slm_path=str(setup.slm),
                     num_labels=NUM_LABELS, max_length=setup.seq_len, **plug)
    return build_classifier(spec, pretrained=setup.pretrained).to(device).train()


# ---------------------------------------------------------------- data

def tokenizer_for(setup: Setup):
    """MiniLM's tokenizer (bert-base-uncased's vocabulary, which BERT-base's config also has)."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    # The reference pads with a fast tokenizer; transformers would advise against it once per run.
    tokenizer.deprecation_warnings["Asking-to-pad-a-fast-tokenizer"] = True
    return tokenizer


def make_rows(tokenizer, n: int, seq_len: int, vocab: int) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """``n`` rows of exactly ``seq_len`` tokens ([CLS] random ids [SEP]) with random labels, twice:
    as the tokenize rule stores them (flat, ``pifi.tokens``) and as the reference's list of rows.

    Every row is full length, so every variant multiplies the same B x T matrices: the ratios are
    the habits' cost, not a difference in padding.
    """
    generator = torch.Generator().manual_seed(0)
    body = torch.randint(1000, vocab, (n, seq_len - 2), generator=generator)
    ids = torch.cat([torch.full((n, 1), tokenizer.cls_token_id), body, torch.full((n, 1), tokenizer.sep_token_id)], 1)
    labels = torch.randint(0, NUM_LABELS, (n,), generator=generator)
    stored = {"train.input_ids": ids.flatten().to(torch.int32),
              "train.lengths": torch.full((n,), seq_len, dtype=torch.int32),
              "train.token_type_ids": torch.zeros(n * seq_len, dtype=torch.int8),
              "train.labels": labels}
    rows = [{"input_ids": ids[i].tolist(), "token_type_ids": [0] * seq_len, "attention_mask": [1] * seq_len,
             "label": int(labels[i])} for i in range(n)]
    return stored, rows


def on_device_split(tokenizer, stored: dict[str, torch.Tensor], seq_len: int, device: torch.device) -> TokenizedSplit:
    return TokenizedSplit.from_tensors(stored, "train", pad_id=tokenizer.pad_token_id, width=seq_len).to(device)


def pipeline_batches(split: TokenizedSplit, buckets: list[int], seed: int) -> Iterator[tuple[dict, torch.Tensor]]:
    """Batches as ``train_classifier`` draws them, epoch after epoch: a seeded permutation per epoch."""
    shuffle = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(split), generator=shuffle).numpy()
        yield from batches(split, order, BATCH, buckets)


# ---------------------------------------------------------------- steps

def _mark_step(device: torch.device) -> None:
    # As pifi.training does before every step: CUDA graphs reuse their output buffers.
    if device.type == "cuda" and hasattr(torch, "compiler"):
        torch.compiler.cudagraph_mark_step_begin()


class ProjectStep:
    """One step exactly as ``train_classifier`` takes it per batch; the optimizer and model persist."""

    def __init__(self, model: PiFiClassifier, device: torch.device, compile_model: bool):
        self.model, self.device, self.cfg = model, device, TrainingConfig()  # the paper's lr, smoothing, clip
        self.step_model = compiled(model, device) if compile_model else model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=self.cfg.learning_rate, fused=device.type == "cuda")
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=self.cfg.label_smoothing)

    def __call__(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        _mark_step(self.device)
        with autocast_for(self.device):
            logits = self.step_model(**inputs)
            loss = self.loss_fn(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        return loss.detach().clone()


class ProjectRun:
    """A ProjectStep fed by ``batches`` (in the pipeline) or one fixed batch (bare), with the epoch's
    bookkeeping of ``train_classifier``: losses kept on the device, one ``.item()`` per epoch."""

    def __init__(self, step: ProjectStep, feed: Iterator[tuple[dict, torch.Tensor]]):
        self.step, self.feed, self.losses = step, feed, []

    def __call__(self) -> None:
        inputs, labels = next(self.feed)
        self.losses.append(self.step(inputs, labels))
        if len(self.losses) == STEPS_PER_EPOCH:
            torch.stack(self.losses).mean().item()
            self.losses = []


class ReferenceRun:
    """A step in the public reference's style (see the module's docstring)."""

    def __init__(self, model: PiFiClassifier, device: torch.device, tokenizer, rows: list[dict[str, Any]]):
        from sklearn.metrics import f1_score

        self.f1_score = f1_score
        self.model, self.device, self.tokenizer, cfg = model, device, tokenizer, TrainingConfig()
        self.grad_clip = cfg.grad_clip
        loader = DataLoader(rows, batch_size=BATCH, shuffle=True, collate_fn=self.collate,
                            generator=torch.Generator().manual_seed(0))
        self.loader = itertools.chain.from_iterable(itertools.repeat(loader))  # epoch after epoch
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)  # the default: not fused
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.total_loss, self.f1 = 0.0, []

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = dict(self.tokenizer.pad([{k: r[k] for k in INPUT_KEYS} for r in rows], return_tensors="pt"))
        batch["labels"] = torch.tensor([r["label"] for r in rows])
        return batch

    def __call__(self) -> None:
        batch = {k: v.to(self.device) for k, v in next(self.loader).items()}
        labels = batch.pop("labels")
        logits = self.model(**batch)
        loss = self.loss_fn(logits, labels)
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.total_loss += loss.item()  # a host sync every step
        self.f1.append(self.f1_score(labels.cpu().numpy(), logits.argmax(dim=-1).cpu().numpy(),
                                     average="macro", zero_division=0))


# ---------------------------------------------------------------- memory (in a child)

def measure_memory(method: str, model_name: str, device_name: str) -> dict[str, Any]:
    """Peak memory of building one classifier and training it a few project steps (run in a child)."""
    device = pick_device(device_name)
    setup = make_setup(model_name)
    for path in (setup.slm, setup.llm):  # import the model classes before the baseline
        MODEL_MAPPING[type(AutoConfig.from_pretrained(path))]
    tokenizer = tokenizer_for(setup)
    if device.type == "cuda":
        torch.zeros(1, device=device)
        torch.cuda.reset_peak_memory_stats(device)
    baseline = peak_rss_mib()
    model = build(method, setup, device)
    after_build = peak_rss_mib() - baseline
    stored, _ = make_rows(tokenizer, BATCH, setup.seq_len, min(tokenizer.vocab_size, model.encoder.config.vocab_size))
    split = on_device_split(tokenizer, stored, setup.seq_len, device)
    inputs, labels = next(batches(split, np.arange(BATCH), BATCH, length_buckets(setup.seq_len)))
    step = ProjectStep(model, device, compile_model=False)
    for _ in range(MEMORY_STEPS):
        step(inputs, labels)
    synchronize(device)
    result = {"build_rss_mib": after_build, "peak_rss_mib": peak_rss_mib() - baseline, **count_parameters(model)}
    if device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    return result


# ---------------------------------------------------------------- timing

@dataclass
class Variant:
    name: str
    method: str       # base or pifi
    compiled: bool
    run: Callable[[], None]
    what: str


def build_variants(setup: Setup, device: torch.device, use_compile: bool, tokenizer) -> tuple[list[Variant], dict]:
    models = {"reference": build("pifi", setup, device), "project": build("pifi", setup, device),
              "base": build("base", setup, device)}
    if use_compile:
        models["project_compiled"] = build("pifi", setup, device)
    vocab = min(tokenizer.vocab_size, models["project"].encoder.config.vocab_size)
    stored, rows = make_rows(tokenizer, BATCH * STEPS_PER_EPOCH, setup.seq_len, vocab)
    split = on_device_split(tokenizer, stored, setup.seq_len, device)
    buckets = length_buckets(setup.seq_len)
    fixed = next(batches(split, np.arange(BATCH), BATCH, buckets))  # the bare steps' one batch, built once

    eager, base = ProjectStep(models["project"], device, False), ProjectStep(models["base"], device, False)
    variants = [
        Variant("reference", "pifi", False, ReferenceRun(models["reference"], device, tokenizer, rows),
                "fp32, DataLoader + tokenizer.pad per step, loss.item() + sklearn F1 per step, Adam (default)"),
        Variant("project", "pifi", False, ProjectRun(eager, pipeline_batches(split, buckets, 0)),
                "train_classifier's step with its data path (bucketed index + mask on the device)"),
        Variant("bare", "pifi", False, ProjectRun(eager, itertools.repeat(fixed)),
                "project's step (same model and optimizer) on one fixed batch"),
        Variant("base", "base", False, ProjectRun(base, pipeline_batches(split, buckets, 0)),
                "project on the base classifier (no plugged layer)"),
    ]
    if use_compile:
        step = ProjectStep(models["project_compiled"], device, True)
        variants[2:2] = [Variant("project_compiled", "pifi", True, ProjectRun(step, pipeline_batches(split, buckets, 0)),
                                 "project through pifi.training.compiled"),
                         Variant("bare_compiled", "pifi", True, ProjectRun(step, itertools.repeat(fixed)),
                                 "project_compiled's step on one fixed batch")]
    params = {m: count_parameters(models[name]) for m, name in (("pifi", "project"), ("base", "base"))}
    return variants, {"params": params, "buckets": buckets, "rows": len(rows), "vocab_drawn_from": [1000, vocab]}


def warm_up(variants: list[Variant], device: torch.device) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {}
    for v in variants:
        print(f"warming up {v.name}" + (" (compiled: the first call of a model compiles it)" if v.compiled else ""),
              flush=True)
        seconds[v.name] = []
        for _ in range(WARMUP_COMPILED if v.compiled else WARMUP):
            start = time.perf_counter()
            v.run()
            synchronize(device)
            seconds[v.name].append(time.perf_counter() - start)
    return seconds


def block_size(device: torch.device) -> int:
    # On a GPU a step is milliseconds: time blocks of steps with one synchronize, or the sync
    # itself would be part of what is timed (the reference's own per-step syncs stay inside).
    return 10 if device.type == "cuda" else 1


def time_rounds(variants: list[Variant], rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step for each variant, round by round, the order reversed every other round."""
    k = block_size(device)
    seconds: dict[str, list[float]] = {v.name: [] for v in variants}
    for r in range(rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            start = time.perf_counter()
            for _ in range(k):
                v.run()
            synchronize(device)
            seconds[v.name].append((time.perf_counter() - start) / k)
    return seconds


# name, numerator, denominator, what it means, target (op, value) or None, target for which device
RATIOS = [
    ("reference/project", "reference", "project", "the reference's habits vs the project's eager step", None, None),
    ("reference/project_compiled", "reference", "project_compiled",
     "the reference's habits vs the step the pipeline takes on CUDA (compile: auto)", (">=", 5.0), "cuda"),
    ("project/project_compiled", "project", "project_compiled", "what compiling buys", None, None),
    ("pifi/base", "project", "base", "what the plugged layer costs per step", ("<=", 1.10), "cuda"),
    ("in_pipeline/bare", "project", "bare", "what the data path costs per step (eager)", ("<=", 1.15), "any"),
    ("in_pipeline/bare compiled", "project_compiled", "bare_compiled",
     "what the data path costs per step (compiled)", ("<=", 1.15), "any"),
]


def ratios_of(seconds: dict[str, list[float]], device: torch.device) -> dict[str, dict[str, Any]]:
    out = {}
    for name, num, den, meaning, target, target_device in RATIOS:
        if num not in seconds or den not in seconds:
            continue
        entry = {"numerator": num, "denominator": den, "meaning": meaning, **paired_ratio(seconds[num], seconds[den])}
        if target is not None:
            op, value = target
            applies = target_device == "any" or device.type == target_device
            met = entry["ratio"] >= value if op == ">=" else entry["ratio"] <= value
            entry.update(target=f"{op} {value}" + (" on a GPU" if target_device == "cuda" else ""),
                         meets_target=met if applies else None)
        out[name] = entry
    return out


def decide_compile(setting: str, model_name: str, device: torch.device) -> tuple[bool, str]:
    if setting == "off":
        return False, "--compile off"
    if setting == "on":
        return True, "--compile on"
    if device.type == "cuda":
        return compile_wanted("auto", device), "auto: the pipeline compiles on CUDA (CUDA graphs)"
    if model_name == "tiny":
        return True, f"auto: on CPU the tiny model compiles in about {CPU_COMPILE_SECONDS['tiny']} s here"
    return False, (f"auto: skipped on CPU - inductor's C++ compile of the {model_name} step takes minutes on a small "
                   f"CPU (a MiniLM-shaped step: {CPU_COMPILE_SECONDS['minilm']} s on 2 busy cores here, on top of the "
                   f"run) and the CPU step is compute-bound, so it says nothing about the CUDA-graph target; "
                   f"--compile on to include it")


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "train_step.json", help="JSON to write")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--model", choices=("auto", "minilm", "bert-base", "tiny"), default="auto",
                        help="auto: bert-base on CUDA (BERT-base + a Qwen2-0.5B layer, 32 x 100, random weights), "
                             "minilm on CPU (MiniLM + SmolLM2 layer 15, 32 x 64); tiny: 2-layer toys, 32 x 64")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (each: one block of steps per variant)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="the compiled variants; auto: on for CUDA, on CPU only for --model tiny")
    parser.add_argument("--no-compile", dest="compile", action="store_const", const="off", help="= --compile off")
    parser.add_argument("--memory-repeats", type=int, default=3,
                        help="child processes per classifier for peak memory (0: skip memory)")
    args = parser.parse_args()
    device = pick_device(args.device)
    model_name = args.model if args.model != "auto" else ("bert-base" if device.type == "cuda" else "minilm")
    setup = make_setup(model_name)
    use_compile, compile_why = decide_compile(args.compile, model_name, device)
    print(f"model {model_name}: {setup.description}; batch {BATCH} x {setup.seq_len}; device {device}")
    print(f"compile: {'on' if use_compile else 'skipped'} ({compile_why})", flush=True)

    # Memory first, each measurement in a fresh child, alternating the methods.
    memory: dict[str, list[dict[str, Any]]] = {"base": [], "pifi": []}
    for _ in range(args.memory_repeats):
        for method in memory:
            memory[method].append(run_in_child(measure_memory, method, model_name, args.device))

    tokenizer = tokenizer_for(setup)
    variants, facts = build_variants(setup, device, use_compile, tokenizer)
    warmup = warm_up(variants, device)
    print(f"timing {args.rounds} rounds", flush=True)
    seconds = time_rounds(variants, args.rounds, device)
    ratios = ratios_of(seconds, device)

    results = {v.name: {"method": v.method, "compiled": v.compiled, "what": v.what, "warmup_seconds": warmup[v.name],
                        "seconds_per_step": seconds[v.name], "seconds_median": median(seconds[v.name]),
                        "seconds_min": min(seconds[v.name])} for v in variants}
    memory_summary = {m: {**facts["params"][m],
                          **{k: median([r[k] for r in runs]) for k in ("build_rss_mib", "peak_rss_mib", "cuda_peak_mib")
                             if runs and k in runs[0]},
                          "runs": runs} for m, runs in memory.items()}

    unit, scale = ("ms", 1e3) if device.type == "cuda" else ("s", 1.0)
    print(f"\n{setup.description}, batch {BATCH} x {setup.seq_len}, device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"median of {args.rounds} interleaved rounds x {block_size(device)} step(s)")
    print_table(["variant", "model", f"median {unit}/step", f"min {unit}/step", "first warm-up step s", "what"],
                [[name, r["method"], f"{r['seconds_median'] * scale:.3f}", f"{r['seconds_min'] * scale:.3f}",
                  f"{r['warmup_seconds'][0]:.2f}", r["what"]] for name, r in results.items()])
    print()
    print_table(["ratio", "of medians", "per round min", "median", "max", "of minima", "target", "verdict"],
                [[name, f"{r['ratio']:.3f}x", f"{r['per_round_min']:.3f}", f"{r['per_round_median']:.3f}",
                  f"{r['per_round_max']:.3f}", f"{r['ratio_of_minima']:.3f}", r.get("target", "-"),
                  {True: "meets", False: "misses", None: "n/a here"}[r.get("meets_target")] if "target" in r else "-"]
                 for name, r in ratios.items()])
    if memory_summary["pifi"].get("peak_rss_mib"):
        p, b = memory_summary["pifi"], memory_summary["base"]
        line = f"\nmemory, pifi/base: peak RSS {p['peak_rss_mib']:.0f}/{b['peak_rss_mib']:.0f} MiB"
        if "cuda_peak_mib" in p:
            line += f", CUDA peak {p['cuda_peak_mib']:.0f}/{b['cuda_peak_mib']:.0f} MiB"
        print(line + f"; trainable params {p['trainable_params'] / 1e6:.2f}M/{b['trainable_params'] / 1e6:.2f}M")
    if not use_compile:
        print(f"compiled variants skipped: {compile_why}")

    cfg = TrainingConfig()
    settings = {"model": model_name, "description": setup.description, "slm": str(setup.slm), "llm": str(setup.llm),
                "slm_weights": "pretrained" if setup.pretrained else "random (seed 0), from the config",
                "slm_config": AutoConfig.from_pretrained(setup.slm).to_diff_dict(),
                "llm_config": AutoConfig.from_pretrained(setup.llm).to_diff_dict(), "layer": setup.layer,
                "batch": BATCH, "seq_len": setup.seq_len, "num_labels": NUM_LABELS, "rows": facts["rows"],
                "row_lengths": f"all {setup.seq_len} tokens", "token_ids_drawn_from": facts["vocab_drawn_from"],
                "steps_per_epoch": STEPS_PER_EPOCH, "buckets": facts["buckets"], "rounds": args.rounds,
                "steps_per_block": block_size(device), "warmup_steps": WARMUP, "warmup_steps_compiled": WARMUP_COMPILED,
                "memory_repeats": args.memory_repeats, "memory_steps": MEMORY_STEPS,
                "compile": {"setting": args.compile, "used": use_compile, "why": compile_why,
                            "mode": ("reduce-overhead" if device.type == "cuda" else "default") if use_compile else None},
                "learning_rate": cfg.learning_rate, "label_smoothing": cfg.label_smoothing, "grad_clip": cfg.grad_clip,
                "project_autocast": "bf16" if device.type == "cuda" else "off (fp32)",
                "project_optimizer": "Adam" + (" (fused)" if device.type == "cuda" else " (default, CPU)"),
                "reference_autocast": "off (fp32)", "reference_optimizer": "Adam (default construction: not fused)",
                "reference_f1": "sklearn f1_score(average='macro') per step", "tokenizer": str(minilm_dir())}
    machine = machine_info(device)
    run_seconds = time.perf_counter() - started
    write_json(args.out, {"benchmark": "train_step", "machine": machine,
                          "device": str(device), "gpu": machine.get("gpu"), "settings": settings,
                          "run_seconds": run_seconds, "variants": results, "memory": memory_summary,
                          "ratios": ratios})
    print(f"wrote {args.out} ({run_seconds:.0f} s in all)")


if __name__ == "__main__":
    main()
