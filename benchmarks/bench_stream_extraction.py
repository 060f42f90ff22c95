"""The selection's hidden-state pass streamed layer by layer against the whole LLM loaded; and a
Llama-3.1-70B-shaped check (bf16 streaming + one PiFi training step with one of its layers plugged in).

Part 1, float32: a random-weight model of TinyLlama-1.1B's shape (24 layers, hidden 2048, ~4.5 GB in
float32), stored in bf16 as real checkpoints are. Each way runs in its own fresh child process,
alternately, from the model directory to the L x N x H pooled states (loading included):

- whole: ``load_llm_for_states`` + ``pooled_layer_states`` (the old path: every layer in memory);
- streamed: ``streamed_layer_states`` (what the workflow runs now: one layer in memory at a time).

Reported: peak RSS of each child (absolute, and above its RSS after imports), wall seconds (medians), and
the max |difference| of the states (0 = the same numbers bit for bit).

Part 2: a random model with Llama-3.1-70B's decoder layer (hidden 8192, intermediate 28672, 64 heads,
8 KV heads; 3 layers, MiniLM's 30,522-token vocabulary), streamed in bf16 (and the whole 3-layer model
in bf16 once, for the difference), then one PiFi training step (``pifi.model.build_classifier`` +
``pifi.training.train_classifier``) of a tiny BERT with its layer 1 plugged in.

    .venv/bin/python benchmarks/bench_stream_extraction.py [--out benchmarks/results/stream_extraction.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging as hf_logging

from common import (MIB, RESULTS, TINY_BERT_SHAPE, copy_tokenizer, machine_info, made_once, median, peak_rss_mib,
                    pick_device, print_table, run_in_child, save_bert, warm_page_cache)
from pifi.artifacts import write_json

hf_logging.disable_progress_bar()  # a "Loading weights" bar per child would bury the table
hf_logging.set_verbosity_error()  # and the whole model's load report (lm_head "unexpected") too
GB = 1e9
SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "train.jsonl"
VOCAB = 30522  # MiniLM's (bert-base-uncased's) tokenizer, copied beside each random model

# TinyLlama-1.1B's layer shape, 24 layers instead of 22 so that the float32 model is over 4 GiB.
TINYLLAMA_SHAPE = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=32,
                       num_key_value_heads=4, vocab_size=VOCAB, max_position_embeddings=2048, rms_norm_eps=1e-5)
# Llama-3.1-70B's decoder layer (public config), 3 of its 80 layers, a small vocabulary.
LLAMA70B_SHAPE = dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=3, num_attention_heads=64,
                      num_key_value_heads=8, vocab_size=VOCAB, max_position_embeddings=131072, rms_norm_eps=1e-5,
                      tie_word_embeddings=True,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192})
LLAMA70B_LAYERS = 80


def save_llama(shape: dict[str, Any]):
    """A ``made_once`` maker: a random Llama of ``shape`` (seed 0) stored in bf16, MiniLM's tokenizer beside it.
    No pad_token_id: the pad row is random, as it is for a real LLM padding with eos."""
    def save(folder: Path) -> None:
        from transformers import AutoModelForCausalLM, LlamaConfig

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(LlamaConfig(**shape), dtype=torch.bfloat16)
        model.save_pretrained(folder)
        copy_tokenizer(folder)
    return save


def texts(n: int) -> list[str]:
    """The first ``n`` SST-2 training rows (the demo's sentiment rows where the shared data are absent)."""
    if SST2.exists():
        with SST2.open() as handle:
            return [json.loads(line)["text"] for _, line in zip(range(n), handle)]
    from pifi.demo_data import demo_splits

    return demo_splits("sentiment")["train"]["text"].head(n).tolist()


def layer_bytes(shape: dict[str, Any], bytes_per_value: int) -> int:
    """One Llama decoder layer's weights: q, k, v, o, gate, up, down and two norms."""
    h, i = shape["hidden_size"], shape["intermediate_size"]
    kv = h // shape["num_attention_heads"] * shape["num_key_value_heads"]
    return (2 * h * h + 2 * h * kv + 3 * h * i + 2 * h) * bytes_per_value


# ---------------------------------------------------------------- measurements (each in a child)

def _settle(model_dir: Path) -> float:
    """Imports and the model class's lazy import, which both ways share; the peak RSS they start from."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    import pifi.hidden  # noqa: F401
    MODEL_MAPPING[type(AutoConfig.from_pretrained(model_dir))]
    return peak_rss_mib()


def extract(way: str, model_dir: Path, sample: list[str], dtype: str, max_length: int,
            batch_size: int) -> dict[str, Any]:
    from pifi.hidden import load_llm_for_states, pooled_layer_states, streamed_layer_states

    baseline = _settle(model_dir)
    start = time.perf_counter()
    if way == "whole":
        model, tokenizer = load_llm_for_states(model_dir, device=torch.device("cpu"), dtype=dtype)
        states = pooled_layer_states(model, tokenizer, sample, max_length=max_length, batch_size=batch_size,
                                     progress=False)
        del model
    else:
        states = streamed_layer_states(model_dir, sample, max_length=max_length, batch_size=batch_size, dtype=dtype,
                                       progress=False)
    seconds = time.perf_counter() - start
    peak = peak_rss_mib()
    return {"seconds": seconds, "peak_rss_gb": peak * MIB / GB,
            "peak_rss_above_imports_gb": (peak - baseline) * MIB / GB,
            "rss_after_imports_gb": baseline * MIB / GB, "states": states}


def train_step(slm_dir: Path, llm_dir: Path, layer: int, rows: list[str]) -> dict[str, Any]:
    """One PiFi training step (and one validation pass) with decoder layer ``layer`` of ``llm_dir`` plugged in."""
    import pandas as pd
    from transformers import AutoTokenizer

    from pifi.model import ModelSpec, build_classifier, count_parameters
    from pifi.tokens import TokenizedSplit
    from pifi.training import TrainingConfig, train_classifier

    baseline = peak_rss_mib()
    start = time.perf_counter()
    spec = ModelSpec(method="pifi_ilm", slm_path=str(slm_dir), num_labels=2, llm_path=str(llm_dir), llm_layer=layer,
                     max_length=64)
    classifier = build_classifier(spec)
    build_seconds = time.perf_counter() - start
    plugged_before = classifier.plug.layer.mlp.down_proj.weight.clone()
    head_before = classifier.to_llm.weight.clone()
    frame = pd.DataFrame({"text": rows, "label": [i % 2 for i in range(len(rows))],
                          "row_id": [f"train-{i}" for i in range(len(rows))]})
    tokenizer = AutoTokenizer.from_pretrained(slm_dir)
    split = TokenizedSplit.from_frame(tokenizer, frame, 64)
    cfg = TrainingConfig(batch_size=len(rows), epochs=1, max_length=64, eval_batch_size=len(rows), compile=False)
    result = train_classifier(classifier, split, split, cfg, torch.device("cpu"))
    counts = count_parameters(classifier)
    return {"build_seconds": build_seconds, "train_seconds": result.train_seconds, "steps": result.steps,
            "train_loss": result.history[0]["train_loss"],
            "plugged_layer_unchanged": bool(torch.equal(plugged_before, classifier.plug.layer.mlp.down_proj.weight)),
            "projection_trained": not bool(torch.equal(head_before, classifier.to_llm.weight)),
            "plugged_params": sum(p.numel() for p in classifier.plug.parameters()),
            "plugged_dtype": str(next(classifier.plug.parameters()).dtype), **counts,
            "peak_rss_gb": peak_rss_mib() * MIB / GB, "peak_rss_above_start_gb": (peak_rss_mib() - baseline) * MIB / GB}


# ---------------------------------------------------------------- driver

def part_equality(repeats: int, n_samples: int, max_length: int, batch_size: int) -> dict[str, Any]:
    model_dir = made_once("tinyllama-1.1b-shaped-24l", save_llama(TINYLLAMA_SHAPE),
                          "a random TinyLlama-1.1B-shaped checkpoint, 24 layers (~2.2 GB bf16)")
    warm_page_cache(model_dir)
    sample = texts(n_samples)
    runs: dict[str, list[dict[str, Any]]] = {"whole": [], "streamed": []}
    states: dict[str, torch.Tensor] = {}
    for repeat in range(repeats):
        for way in ("streamed", "whole"):  # alternate, so that slow spells of the machine hit both
            run = run_in_child(extract, way, model_dir, sample, "float32", max_length, batch_size)
            states[way] = run.pop("states")
            runs[way].append(run)
            print(f"  {way} #{repeat + 1}: {run['seconds']:.1f} s, peak RSS {run['peak_rss_gb']:.2f} GB "
                  f"(+{run['peak_rss_above_imports_gb']:.2f} above imports)", flush=True)
    whole, streamed = runs["whole"], runs["streamed"]
    layers, hidden = TINYLLAMA_SHAPE["num_hidden_layers"], TINYLLAMA_SHAPE["hidden_size"]
    model_gb = (layers * layer_bytes(TINYLLAMA_SHAPE, 4) + VOCAB * hidden * 4 + hidden * 4) / GB
    return {
        "model": "random, TinyLlama-1.1B layer shape, 24 layers, stored bf16", "path": str(model_dir),
        "shape": TINYLLAMA_SHAPE, "dtype": "float32", "n_samples": len(sample), "max_length": max_length,
        "batch_size": batch_size, "repeats": repeats,
        "layers": layers, "layer_gb": layer_bytes(TINYLLAMA_SHAPE, 4) / GB, "whole_model_gb": model_gb,
        "peak_rss_whole_gb": median([r["peak_rss_gb"] for r in whole]),
        "peak_rss_streamed_gb": median([r["peak_rss_gb"] for r in streamed]),
        "peak_rss_above_imports_whole_gb": median([r["peak_rss_above_imports_gb"] for r in whole]),
        "peak_rss_above_imports_streamed_gb": median([r["peak_rss_above_imports_gb"] for r in streamed]),
        "seconds_whole": median([r["seconds"] for r in whole]),
        "seconds_streamed": median([r["seconds"] for r in streamed]),
        "max_abs_diff": (states["streamed"] - states["whole"]).abs().max().item(),
        "bitwise_equal": bool(torch.equal(states["streamed"], states["whole"])),
        "states_shape": list(states["streamed"].shape), "runs": runs,
    }


def part_llama70b(n_samples: int, max_length: int, batch_size: int) -> dict[str, Any]:
    model_dir = made_once("llama-3.1-70b-layer-shaped-3l", save_llama(LLAMA70B_SHAPE),
                          "a random checkpoint with Llama-3.1-70B's layer shape, 3 layers (~5.6 GB bf16)")
    slm_dir = made_once("tiny-bert", save_bert(TINY_BERT_SHAPE), "a tiny random BERT")
    warm_page_cache(model_dir)
    sample = texts(n_samples)
    streamed = run_in_child(extract, "streamed", model_dir, sample, "bfloat16", max_length, batch_size)
    print(f"  70B-shaped streamed (bf16): {streamed['seconds']:.1f} s, peak RSS {streamed['peak_rss_gb']:.2f} GB",
          flush=True)
    whole = run_in_child(extract, "whole", model_dir, sample, "bfloat16", max_length, batch_size)
    print(f"  70B-shaped whole 3-layer model (bf16): {whole['seconds']:.1f} s, peak RSS {whole['peak_rss_gb']:.2f} GB",
          flush=True)
    step = run_in_child(train_step, slm_dir, model_dir, 1, sample[:16])
    print(f"  PiFi step with layer 1 plugged: build {step['build_seconds']:.1f} s, "
          f"train {step['train_seconds']:.1f} s, "
          f"peak RSS {step['peak_rss_gb']:.2f} GB, loss {step['train_loss']:.4f}", flush=True)
    s, w = streamed.pop("states"), whole.pop("states")
    hidden = LLAMA70B_SHAPE["hidden_size"]
    return {
        "model": "random, Llama-3.1-70B layer shape, 3 layers, vocab 30522, stored bf16", "path": str(model_dir),
        "shape": LLAMA70B_SHAPE, "dtype": "bfloat16", "n_samples": len(sample), "max_length": max_length,
        "batch_size": batch_size, "layers": LLAMA70B_SHAPE["num_hidden_layers"],
        "layer_gb": layer_bytes(LLAMA70B_SHAPE, 2) / GB,
        "real_70b_whole_model_gb": (LLAMA70B_LAYERS * layer_bytes(LLAMA70B_SHAPE, 2) + 2 * 128256 * hidden * 2) / GB,
        "activations_gb_400x128": 400 * 128 * hidden * 2 / GB,
        "streamed": streamed, "whole_3_layers": whole,
        "max_abs_diff_streamed_vs_whole": (s - w).abs().max().item(), "bitwise_equal": bool(torch.equal(s, w)),
        "states_finite": bool(torch.isfinite(s).all()), "states_dtype": str(s.dtype),
        "train_step": step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "stream_extraction.json", help="JSON to write")
    parser.add_argument("--repeats", type=int, default=2, help="measurements of each way (part 1)")
    parser.add_argument("--samples", type=int, default=400, help="texts in part 1 (the selection's default)")
    parser.add_argument("--samples-70b", type=int, default=64, help="texts in part 2 (bf16 on a CPU is slow)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--only", choices=["float32", "70b"], help="run one part (a check; writes what it ran)")
    args = parser.parse_args()

    device = pick_device("cpu")
    llama70b = None if args.only == "float32" else part_llama70b(args.samples_70b, args.max_length, 16)
    if args.only == "70b":
        write_json(args.out, {"benchmark": "stream_extraction", "machine": machine_info(device),
                              "llama70b_shaped": llama70b})
        print(f"wrote {args.out}")
        return
    equality = part_equality(args.repeats, args.samples, args.max_length, args.batch_size)

    print(f"\n{equality['layers']} layers x {equality['layer_gb']:.3f} GB (fp32), whole model "
          f"{equality['whole_model_gb']:.2f} GB; {equality['n_samples']} SST-2 texts, max {args.max_length} tokens; "
          f"medians of {args.repeats}")
    print_table(["way", "seconds", "peak RSS GB", "above imports GB"],
                [[way, f"{equality[f'seconds_{way}']:.1f}", f"{equality[f'peak_rss_{way}_gb']:.2f}",
                  f"{equality[f'peak_rss_above_imports_{way}_gb']:.2f}"] for way in ("whole", "streamed")])
    print(f"streamed / whole: time {equality['seconds_streamed'] / equality['seconds_whole']:.2f}x, "
          f"peak RSS {equality['peak_rss_streamed_gb'] / equality['peak_rss_whole_gb']:.2f}x; "
          f"max |diff| {equality['max_abs_diff']:.3g}")
    write_json(args.out, {
        "benchmark": "stream_extraction", "machine": machine_info(device),
        "gpu": "none: this session had no GPU; CPU numbers only",
        **{key: equality[key] for key in ("layers", "layer_gb", "peak_rss_whole_gb", "peak_rss_streamed_gb",
                                          "seconds_whole", "seconds_streamed", "max_abs_diff")},
        "ratios": {"peak_rss_streamed_over_whole": equality["peak_rss_streamed_gb"] / equality["peak_rss_whole_gb"],
                   "seconds_streamed_over_whole": equality["seconds_streamed"] / equality["seconds_whole"]},
        "float32_model": equality, "llama70b_shaped": llama70b})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
