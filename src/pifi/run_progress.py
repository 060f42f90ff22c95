"""The console line each training job prints when it ends: what it scored, how many runs are left,
and about how long they will take.

Snakemake's own "N of M steps (x%)" counts only the jobs known so far: M grows each time a
checkpoint (prepared data, a model's depth, the layer selection) resolves, so its percentage can
fall. This line counts training runs against the whole plan (``pifi.run_plan``), read from the
files those checkpoints wrote; while one is missing, the total is a lower bound and says so.

The estimate divides the runs left by the pace of this invocation: runs finished since Snakemake
started (the mtime of its lock files in ``.snakemake/locks``) over the time since the first of them
started, which counts parallel jobs without knowing how many there are.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pifi import run_plan
from pifi.artifacts import ArtifactError, read_json
from pifi.config import ConfigError


@dataclass(frozen=True)
class Plan:
    run_dirs: tuple[str, ...]  # relative to the project root
    complete: bool  # False while the depth of an LLM or a selection is not known yet

    @property
    def runs(self) -> int:
        return len(self.run_dirs)


def planned_runs(config: Mapping, root: str | Path = ".") -> Plan:
    """How many training runs ``config`` asks for, as far as the files under ``root`` tell."""
    root = Path(root)
    run, complete = config["run"], True
    depths: dict[str, int | None] = {}
    for llm in run["llms"]:
        manifest = _read(root / f"results/models/{llm}/model.json")
        depths[llm] = manifest["num_layers"] if manifest else None

    def layers_of(dataset: str, slm: str, llm: str) -> set[int]:
        nonlocal complete
        layers = set()
        if depths[llm] is None:
            complete = False
        else:
            try:
                layers = run_plan.planned_layers(run["methods"], config["sweep"], depths[llm])
            except ConfigError:  # the workflow stops on it; the count just leaves those layers out
                complete = False
        if "pifi_ilm" in run["methods"]:
            selection = _read(root / f"results/selection/{dataset}/{slm}/{llm}/selection.json")
            if selection is None:
                complete = False
            else:
                chosen = {name: choice["layer"] for name, choice in selection["choices"].items()}
                layers |= run_plan.chosen_layers(run["methods"], chosen, config["selection"]["selector"])
        return layers

    def survivors_of(dataset: str, slm: str, llm: str, rung: int) -> list[int]:
        nonlocal complete
        cut = _read(root / f"results/race/{dataset}/{slm}/{llm}/cut{rung}.json")
        if cut is None:
            complete = False
            return []
        return cut["survivors"]

    run_dirs = run_plan.base_run_dirs(run) + run_plan.pifi_run_dirs(run, layers_of)
    run_dirs += [d for d in run_plan.race_run_dirs(run, survivors_of) if d not in set(run_dirs)]
    return Plan(tuple(run_dirs), complete)


def _read(path: Path) -> dict | None:
    try:
        return read_json(path) if path.exists() else None
    except ArtifactError:  # being rewritten, or corrupt: the workflow reports it, the count skips it
        return None


def finished_runs(run_dirs: Iterable[str], root: str | Path = ".") -> list[dict]:
    """The timings of the finished runs among ``run_dirs`` (timings.json is a run's last output)."""
    timings = []
    for run_dir in run_dirs:
        record = _read(Path(root) / run_dir / "timings.json")
        if record and "finished_at" in record:
            timings.append(record)
    return timings


def invocation_start(root: str | Path = ".") -> float | None:
    """When the running Snakemake started: its lock files are written then (None with --nolock)."""
    locks = list(Path(root).glob(".snakemake/locks/*.lock"))
    return min(lock.stat().st_mtime for lock in locks) if locks else None


def seconds_left(timings: list[dict], runs_left: int, *, since: float | None, now: float) -> float | None:
    """Runs left over this invocation's pace (runs finished per second since its first run started)."""
    if runs_left <= 0:
        return 0.0
    recent = [t for t in timings if since is None or t["finished_at"] >= since]
    if not recent:
        return None
    first_start = min(t["started_at"] for t in recent)
    if now <= first_start:
        return None
    return runs_left * (now - first_start) / len(recent)


def duration(seconds: float) -> str:
    """1:05:09, 4:07 or 38 s."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(what: str, *, validation_accuracy: float, best_epoch: int, epochs: int, seconds: float,
                  planned: int, complete: bool, done: int, eta: float | None) -> str:
    """``PiFi: trained <what>: validation accuracy 81.2 % (best epoch 3 of 4) in 1:23; training runs
    14 of 60 done, about 12:10 left at this pace``."""
    total = f"{planned}" if complete else f"at least {planned}"
    line = (f"PiFi: trained {what}: validation accuracy {100 * validation_accuracy:.1f} % "
            f"(best epoch {best_epoch} of {epochs}) in {duration(seconds)}; training runs {done} of {total} done")
    if eta is not None and done < planned:
        line += f", about {duration(eta)} left at this pace"
    if not complete:
        line += " (more once the layer selection or a model's depth is known)"
    return line


def report_finished_run(config: Mapping, what: str, *, validation_accuracy: float, best_epoch: int, epochs: int,
                        seconds: float, root: str | Path = ".") -> str:
    """The whole line for a run that just wrote its outputs (its own timings included)."""
    plan = planned_runs(config, root)
    timings = finished_runs(plan.run_dirs, root)
    eta = seconds_left(timings, plan.runs - len(timings), since=invocation_start(root), now=time.time())
    return progress_line(what, validation_accuracy=validation_accuracy, best_epoch=best_epoch, epochs=epochs,
                         seconds=seconds, planned=plan.runs, complete=plan.complete, done=len(timings), eta=eta)
