"""How long the training loop waits for an epoch checkpoint: written in the background vs in line.

At each epoch end (but the last) ``train_classifier`` saves a resumable checkpoint through
``pifi.resume.ResumeStore``: the trainable weights, the best state so far and Adam's two moments,
1.8 GB for BERT-base. On an H100 four jobs writing theirs at once left the GPU idle 8-10 s per epoch
boundary (benchmarks/README.md). ``ResumeStore.save`` now copies the state to host memory and a
writer thread serialises, checksums and writes the file while the next epoch trains.

Each round times both ways on the same state, in turns:
    inline       ``save`` then ``wait``: what the loop waited before (the whole write)
    background   ``save`` alone: what the loop waits now (the copy); ``wait`` after it gives the
                 write's own time, which now overlaps training
Ratio: inline / background (of medians, and per round). The file is the same either way.

    .venv/bin/python benchmarks/bench_checkpoint.py                       # CPU, BERT-base-shaped
    python3 benchmarks/bench_checkpoint.py --device cuda                  # a GPU (the copy is device-to-host)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from common import (BERT_BASE_SHAPE, MIB, RESULTS, TINY_BERT_SHAPE, machine_info, made_once, median, paired_ratio,
                    pick_device, print_table, save_bert, synchronize)
from pifi.artifacts import write_json
from pifi.model import ModelSpec, build_classifier
from pifi.resume import EpochState, ResumeStore

SHAPES = {"bert-base": ("slots-bert-base-random", BERT_BASE_SHAPE), "tiny": ("slots-tiny-bert", TINY_BERT_SHAPE)}


def trained_state(slm: Path, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer, dict]:
    """A classifier and an Adam that has taken one step (so both moments exist), and a best state."""
    torch.manual_seed(0)
    model = build_classifier(ModelSpec(method="base", slm_path=str(slm), num_labels=2)).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, fused=device.type == "cuda")
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()
    best = {k: v.detach().to("cpu", copy=True) for k, v in model.trainable_state_dict().items()}
    return model, optimizer, best


def time_save(store: ResumeStore, model, optimizer, best, device: torch.device, *, inline: bool) -> tuple[float, float]:
    """(seconds the caller waited, seconds until the file was written)."""
    state = EpochState(epoch=1, history=[{"epoch": 1}], best_epoch=1, best_accuracy=0.5, best_state=best)
    synchronize(device)
    started = time.perf_counter()
    store.save(state, model, optimizer, torch.Generator().manual_seed(0), device)
    if inline:
        store.wait()
    blocked = time.perf_counter() - started
    store.wait()
    return blocked, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--model", choices=sorted(SHAPES), default="bert-base")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "checkpoint.json")
    args = parser.parse_args()
    device = pick_device(args.device)
    name, shape = SHAPES[args.model]
    model, optimizer, best = trained_state(made_once(name, save_bert(shape), f"random {args.model} weights"), device)
    times: dict[str, dict[str, list[float]]] = {way: {"blocked": [], "written": []} for way in ("inline", "background")}
    with tempfile.TemporaryDirectory(prefix="pifi-bench-checkpoint-") as tmp:
        store = ResumeStore(Path(tmp) / "resume", "bench")
        for round_ in range(args.rounds):
            ways = ("inline", "background") if round_ % 2 == 0 else ("background", "inline")
            for way in ways:
                blocked, written = time_save(store, model, optimizer, best, device, inline=way == "inline")
                times[way]["blocked"].append(blocked)
                times[way]["written"].append(written)
        size_mib = store.path.stat().st_size / MIB
        store.clear()
    ratio = paired_ratio(times["inline"]["blocked"], times["background"]["blocked"])
    print(f"\n{args.model}, {device}, checkpoint {size_mib:.0f} MiB, medians of {args.rounds} rounds")
    print_table(["way", "loop waits s", "file written after s"],
                [[way, f"{median(t['blocked']):.2f}", f"{median(t['written']):.2f}"] for way, t in times.items()])
    print(f"inline / background, time the loop waits: {ratio['ratio']:.1f}x "
          f"(per round {ratio['per_round_min']:.1f}-{ratio['per_round_max']:.1f})")
    write_json(args.out, {"benchmark": "checkpoint", "machine": machine_info(device), "model": args.model,
                          "rounds": args.rounds, "checkpoint_mib": size_mib, "times": times,
                          "inline_over_background_blocked": ratio})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
