"""Building one frozen decoder layer from its own tensors vs loading the whole LLM to take that layer.

For each model, the two ways are measured alternately, each in its own fresh child process, so that
neither one's peak memory leaks into the other's: wall time (to the layer on the device) and the
peak RSS above the child's RSS after imports. Medians over the repeats and full/plugged ratios are
reported; a ratio of 20 means the plugged build is 20x cheaper. Once per model, the built layer's
output is checked against the full model's own layer (run inside the full model's forward).

    .venv/bin/python benchmarks/bench_plugged_layer.py [--out benchmarks/results/plugged_layer.json]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.utils import logging as hf_logging

from common import (CACHE, MIB, RESULTS, ensure_cache, machine_info, median, peak_rss_mib, pick_device,
                    print_table, run_in_child, smollm2_dir, synchronize, warm_page_cache)
from pifi.artifacts import write_json
from pifi.plugged_layer import build_plugged_layer

hf_logging.disable_progress_bar()  # one "Loading weights" bar per child would bury the table

LAYER = 15  # the layer the project's demo plugs; any index works
# Qwen2-0.5B's shapes (494M parameters). Random weights: only the sizes matter for cost.
QWEN2_05B_SHAPE = dict(hidden_size=896, num_hidden_layers=24, intermediate_size=4864, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rms_norm_eps=1e-6,
                       max_position_embeddings=32768, rope_parameters={"rope_theta": 1e6, "rope_type": "default"})


# ---------------------------------------------------------------- model directories (made once)

def synthetic_qwen2_dir() -> Path:
    """A Qwen2-0.5B-shaped checkpoint with random weights, saved in bf16 like the real one (~1 GB)."""
    out = CACHE / "qwen2-0.5b-shaped"
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, Qwen2Config

    ensure_cache()
    print(f"saving a random Qwen2-0.5B-shaped checkpoint to {out} (once)")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(Qwen2Config(**QWEN2_05B_SHAPE), dtype=torch.bfloat16)
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix=f".{out.name}."))
    try:  # written aside and renamed, so an interrupted save is never mistaken for a checkpoint
        model.save_pretrained(tmp)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---------------------------------------------------------------- measurements (each in a child)

def _settle(model_dir: Path, device: torch.device) -> float:
    """Do the one-off work both ways share (lazy import of the model class, CUDA context), then
    return the peak RSS that the measurement starts from."""
    MODEL_MAPPING[type(AutoConfig.from_pretrained(model_dir))]
    if device.type == "cuda":
        torch.zeros(1, device=device)
        torch.cuda.reset_peak_memory_stats(device)
    return peak_rss_mib()


def measure(way: str, model_dir: Path, layer: int, device_name: str) -> dict[str, Any]:
    device = pick_device(device_name)
    baseline = _settle(model_dir, device)
    start = time.perf_counter()
    if way == "plugged":
        block = build_plugged_layer(model_dir, layer).to(device)
        held = block
    else:
        # fp32 like the plugged layer (and like the pipeline's LLM on CPU), so both hold the same layer.
        held = AutoModel.from_pretrained(model_dir, dtype=torch.float32).to(device)
        block = held.layers[layer]
    synchronize(device)
    result: dict[str, Any] = {"load_s": time.perf_counter() - start, "load_rss_mib": peak_rss_mib() - baseline,
                              "params": sum(p.numel() for p in held.parameters()),
                              "layer_params": sum(p.numel() for p in block.parameters())}
    if device.type == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    # When the checkpoint's dtype is already fp32, from_pretrained leaves the weights memory-mapped:
    # they become resident (and are read from the file) only when first touched, e.g. by a forward
    # pass. Touch every tensor once to see that cost too.
    with torch.no_grad():
        for tensor in [*held.parameters(), *held.buffers()]:
            tensor.sum()
    synchronize(device)
    result["read_s"] = time.perf_counter() - start
    result["read_rss_mib"] = peak_rss_mib() - baseline
    return result


def max_abs_diff(model_dir: Path, layer: int, device_name: str) -> float:
    """Max |built layer(x) - full model's layer(x)| on random x, one token at position 0.

    The reference runs inside the full model's own forward (its mask, its rotary embedding): a hook
    swaps layer ``layer``'s input for x and another keeps its output."""
    device = pick_device(device_name)
    plugged = build_plugged_layer(model_dir, layer).to(device)
    full = AutoModel.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    hidden = full.config.hidden_size
    x = torch.randn(4, hidden, generator=torch.Generator().manual_seed(0)).to(device)
    kept: dict[str, torch.Tensor] = {}

    def swap_input(module, args, kwargs):
        if args:
            return (x.unsqueeze(1), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": x.unsqueeze(1)}

    def keep_output(module, args, output):
        kept["out"] = output[0] if isinstance(output, tuple) else output

    target = full.layers[layer]
    hooks = [target.register_forward_pre_hook(swap_input, with_kwargs=True), target.register_forward_hook(keep_output)]
    with torch.no_grad():
        full(inputs_embeds=torch.zeros(4, 1, hidden, device=device),
             attention_mask=torch.ones(4, 1, dtype=torch.long, device=device), use_cache=False)
        ours = plugged(x)
    for hook in hooks:
        hook.remove()
    return (ours - kept["out"][:, 0]).abs().max().item()


# ---------------------------------------------------------------- driver

METRICS = ("load_s", "read_s", "load_rss_mib", "read_rss_mib", "cuda_peak_mib")


def bench_model(name: str, model_dir: Path, repeats: int, device_name: str) -> dict[str, Any]:
    config = AutoConfig.from_pretrained(model_dir)
    file_bytes = warm_page_cache(model_dir)
    runs: dict[str, list[dict[str, Any]]] = {"plugged": [], "full": []}
    for repeat in range(repeats):
        for way in ("plugged", "full"):  # alternate, so that slow spells of the machine hit both
            run = run_in_child(measure, way, model_dir, LAYER, device_name)
            runs[way].append(run)
            print(f"  {name} {way} #{repeat + 1}: load {run['load_s']:.2f} s +{run['load_rss_mib']:.0f} MiB, "
                  f"read {run['read_s']:.2f} s +{run['read_rss_mib']:.0f} MiB", flush=True)
    summary: dict[str, Any] = {}
    for way, results in runs.items():
        summary[way] = {"params": results[0]["params"], "layer_params": results[0]["layer_params"], "runs": results}
        summary[way].update({f"{m}_median": median([r[m] for r in results]) for m in METRICS if m in results[0]})
    plugged, full = summary["plugged"], summary["full"]
    ratios = {"params": full["params"] / plugged["params"]}
    # max(.., 1 MiB): a delta below the allocator's granularity must not blow the ratio up.
    ratios.update({m: full[f"{m}_median"] / max(plugged[f"{m}_median"], 1.0 if "mib" in m else 1e-9)
                   for m in METRICS if f"{m}_median" in plugged})
    return {"name": name, "path": str(model_dir), "model_type": config.model_type,
            "num_layers": config.num_hidden_layers, "hidden_size": config.hidden_size, "layer": LAYER,
            "weights_file_mib": file_bytes / MIB,
            "max_abs_diff": run_in_child(max_abs_diff, model_dir, LAYER, device_name),
            **summary, "ratios_full_over_plugged": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "plugged_layer.json", help="JSON to write")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each way per model")
    parser.add_argument("--no-synthetic", action="store_true", help="skip the Qwen2-0.5B-shaped model (~1 GB)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    args = parser.parse_args()

    device = pick_device(args.device)
    models = [("smollm2-135m", smollm2_dir())]
    if not args.no_synthetic:
        models.append(("qwen2-0.5b-shaped (random)", synthetic_qwen2_dir()))
    results = [bench_model(name, path, args.repeats, args.device) for name, path in models]

    rows = []
    for r in results:
        for way in ("plugged", "full"):
            m = r[way]
            rows.append([r["name"], way, f"{m['params'] / 1e6:.1f}M", f"{m['load_s_median']:.2f}",
                         f"{m['read_s_median']:.2f}", f"{m['load_rss_mib_median']:.0f}", f"{m['read_rss_mib_median']:.0f}"])
        q = r["ratios_full_over_plugged"]
        rows.append([r["name"], "full/plugged", *(f"{q[k]:.1f}x" for k in ("params", *METRICS[:4]))])
    print(f"\nlayer {LAYER}, fp32, medians of {args.repeats}, device {device}; "
          "'read' = after touching every loaded tensor once")
    print_table(["model", "way", "params", "load s", "read s", "load RSS +MiB", "read RSS +MiB"], rows)
    for r in results:
        if "cuda_peak_mib_median" in r["plugged"]:
            print(f"{r['name']}: CUDA peak {r['plugged']['cuda_peak_mib_median']:.0f} MiB plugged, "
                  f"{r['full']['cuda_peak_mib_median']:.0f} MiB full")
        print(f"{r['name']}: max |plugged(x) - full model's layer(x)| = {r['max_abs_diff']:.3g}")

    write_json(args.out, {"benchmark": "plugged_layer", "machine": machine_info(device),
                          "settings": {"repeats": args.repeats, "layer": LAYER, "dtype": "float32",
                                       "page_cache": "warm"},
                          "models": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
