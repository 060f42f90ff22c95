"""The console line after each training run: the plan it counts against, and the estimate."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pifi.artifacts import write_json
from pifi.run_progress import (duration, finished_runs, invocation_start, planned_runs, progress_line,
                               report_finished_run, seconds_left)

CONFIG = {"run": {"datasets": ["d"], "slms": ["s"], "llms": ["l"], "methods": ["base", "pifi_last", "pifi_ilm",
                                                                         "pifi_sweep"], "seeds": [1, 2]},
          "sweep": {"layers": [0, 2]}, "selection": {"selector": "fisher"}}


def finish(root: Path, run_dir: str, started: float, finished: float) -> None:
    write_json(root / run_dir / "timings.json", {"started_at": started, "finished_at": finished})


def test_the_plan_is_a_lower_bound_until_depth_and_selection_are_known(tmp_path):
    plan = planned_runs(CONFIG, tmp_path)
    assert (plan.runs, plan.complete) == (2, False)  # the base runs only
    write_json(tmp_path / "results/models/l/model.json", {"num_layers": 4})
    plan = planned_runs(CONFIG, tmp_path)
    # layers 0, 2 (sweep) and 3 (last) x 2 seeds, + 2 base runs; the selection still unknown
    assert (plan.runs, plan.complete) == (8, False)
    write_json(tmp_path / "results/selection/d/s/l/selection.json",
               {"choices": {"fisher": {"layer": 1}, "middle": {"layer": 2}}})
    plan = planned_runs(CONFIG, tmp_path)
    assert (plan.runs, plan.complete) == (10, True)  # + layer 1: each layer once, whoever asks for it
    assert "results/runs/d/s/pifi/l/layer1/seed2" in plan.run_dirs


def test_without_a_sweep_only_the_driving_selectors_layer_is_trained(tmp_path):
    config = {**CONFIG, "run": {**CONFIG["run"], "methods": ["pifi_ilm"]}}
    write_json(tmp_path / "results/models/l/model.json", {"num_layers": 4})
    write_json(tmp_path / "results/selection/d/s/l/selection.json",
               {"choices": {"fisher": {"layer": 1}, "middle": {"layer": 2}}})
    assert planned_runs(config, tmp_path).run_dirs == ("results/runs/d/s/pifi/l/layer1/seed1",
                                                       "results/runs/d/s/pifi/l/layer1/seed2")


def test_only_planned_runs_count_as_done(tmp_path):
    finish(tmp_path, "results/runs/d/s/base/seed1", 0, 10)
    finish(tmp_path, "results/runs/d/s/base/seed9", 0, 10)  # a seed no longer in the config
    assert len(finished_runs(planned_runs(CONFIG, tmp_path).run_dirs, tmp_path)) == 1


def test_the_estimate_counts_parallel_jobs_by_their_pace():
    # Two jobs at a time, 100 s each: 4 runs done 200 s after the first started -> 50 s a run.
    timings = [{"started_at": s, "finished_at": s + 100} for s in (1000, 1000, 1100, 1100)]
    assert seconds_left(timings, 6, since=None, now=1200) == pytest.approx(300)
    # Runs finished before this invocation started do not set its pace.
    old = [{"started_at": 0, "finished_at": 50}]
    assert seconds_left(old + timings, 6, since=900, now=1200) == pytest.approx(300)
    assert seconds_left(old, 6, since=900, now=1200) is None
    assert seconds_left(timings, 0, since=None, now=1200) == 0


def test_invocation_start_is_the_lock_files_time(tmp_path):
    assert invocation_start(tmp_path) is None
    lock = tmp_path / ".snakemake/locks/0.input.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    os.utime(lock, (1234.0, 1234.0))
    assert invocation_start(tmp_path) == 1234.0


@pytest.mark.parametrize("seconds, text", [(38.4, "38 s"), (247, "4:07"), (3909, "1:05:09")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_the_line_says_what_ran_what_is_left_and_whether_the_total_can_grow():
    line = progress_line("d/s + l layer 2 seed 1", validation_accuracy=0.8125, best_epoch=3, epochs=4, seconds=83,
                         planned=60, complete=True, done=14, eta=730)
    assert line == ("PiFi: trained d/s + l layer 2 seed 1: validation accuracy 81.2 % (best epoch 3 of 4) in 1:23; "
                    "training runs 14 of 60 done, about 12:10 left at this pace")
    line = progress_line("d/s base seed 1", validation_accuracy=0.5, best_epoch=1, epochs=1, seconds=5,
                         planned=8, complete=False, done=2, eta=None)
    assert line.endswith("training runs 2 of at least 8 done (more once the layer selection or a model's depth "
                         "is known)")


def test_a_finished_run_reports_against_the_plan_in_its_project(tmp_path):
    write_json(tmp_path / "results/models/l/model.json", {"num_layers": 4})
    write_json(tmp_path / "results/selection/d/s/l/selection.json", {"choices": {"fisher": {"layer": 1}}})
    now = time.time()
    finish(tmp_path, "results/runs/d/s/base/seed1", now - 20, now - 10)
    finish(tmp_path, "results/runs/d/s/base/seed2", now - 10, now)
    line = report_finished_run(CONFIG, "d/s base seed 2", validation_accuracy=0.75, best_epoch=2, epochs=2,
                               seconds=10, root=tmp_path)
    # 10 planned runs (layers 0, 1, 2, 3 x 2 seeds + 2 base), 2 done at 10 s a run: 80 s left
    assert "training runs 2 of 10 done, about 1:2" in line  # 1:20, give or take the clock


def test_a_jobs_progress_reaches_the_console_at_most_once_a_minute_and_notes_marked_always_at_once(monkeypatch):
    from pifi import progress as progress_module

    clock = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    lines: list[str] = []
    progress_module.echo_to_console(lines.append, "train_pifi a/b")
    progress_module.echo("epoch 1 of 3")  # a quiet start: nothing yet
    clock[0] += 59
    progress_module.echo("epoch 2 of 3")
    assert lines == []
    clock[0] += 2  # 61 s of silence
    progress_module.echo("epoch 3 of 3")
    progress_module.note("resumed after epoch 1 of 3", always=True)
    progress_module.echo("too soon")
    assert lines == ["PiFi: train_pifi a/b: epoch 3 of 3", "PiFi: train_pifi a/b: resumed after epoch 1 of 3"]
    # the periodic lines of progress() are echoed the same way
    def slow():
        for item in range(3):
            clock[0] += 61
            yield item
    list(progress_module.progress(slow(), total=4, desc="hidden states", interval=30))
    assert [l for l in lines if "hidden states" in l] == [
        "PiFi: train_pifi a/b: hidden states: 1/4 (25%), 61 s, about 183 s left",
        "PiFi: train_pifi a/b: hidden states: 2/4 (50%), 122 s, about 122 s left",
        "PiFi: train_pifi a/b: hidden states: 3/4 (75%), 183 s, about 61 s left"]
    progress_module.echo_to_console(None, "")  # leave no sink behind for other tests
