"""What every workflow script does first (``pifi.job``): threads, and no torch where none is needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

CPU_SIDE = ["pifi.artifacts", "pifi.job", "pifi.data", "pifi.evaluation", "pifi.selection_record", "pifi.summary",
            "pifi.plots", "pifi.config"]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_cpu_side_jobs_start_without_torch():
    """Importing torch (and CUDA's libraries) costs seconds per job; jobs that only read JSON, parquet or
    numpy (data, evaluation, selection record, summary, figures) must not pay it."""
    result = run_python(f"""
        import sys
        for name in {CPU_SIDE!r}:
            __import__(name)
        print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_start_job_gives_torch_the_rules_threads_also_when_imported_later(tmp_path):
    """One thread (not the default of every core), also for torch imported after start_job."""
    log = tmp_path / "job.log"
    result = run_python(f"""
        from types import SimpleNamespace
        from pifi.job import start_job

        snakemake = SimpleNamespace(log=[{str(log)!r}], rule="demo", wildcards={{"x": "1"}}, threads=1)
        start_job(snakemake)
        import torch
        print(torch.get_num_threads())
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    assert "rule demo, wildcards {'x': '1'}, threads 1" in log.read_text()


def test_release_device_hands_the_gpu_slot_to_a_waiting_job(tmp_path):
    """A job done with the GPU gives its slot back before it exits (it still has outputs to write):
    a second job can claim the only slot while the first is still alive."""
    result = run_python(f"""
        import json, subprocess, sys
        from types import SimpleNamespace
        from pifi.gpu import claimed_slots
        from pifi.job import job_device, release_device

        config = {{"gpus": [0], "gpu_slots_per_gpu": 1, "gpu_lock_dir": {str(tmp_path / "locks")!r},
                   "gpu_wait_timeout": 0}}
        job = SimpleNamespace(resources={{"gpu": 1}}, config=config, params={{"device": "auto"}})
        device = job_device(job)  # claims the pretended GPU 0, then trains on what torch finds
        held = claimed_slots()
        other = ("from types import SimpleNamespace; from pifi.job import job_device; "
                 f"job_device(SimpleNamespace(resources={{{{'gpu': 1}}}}, config={{config!r}}, params={{{{}}}}))")
        busy = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True)
        release_device(device)
        free = subprocess.run([sys.executable, "-c", other], capture_output=True, text=True)
        print(json.dumps({{"held": held, "after": claimed_slots(), "busy_rc": busy.returncode,
                          "free_rc": free.returncode, "busy_err": busy.stderr[-300:]}}))
    """)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["held"] == [[0, 0]] and report["after"] == []
    assert report["busy_rc"] != 0 and "GPU" in report["busy_err"]  # the slot was taken: no wait allowed
    assert report["free_rc"] == 0  # released while this process lives on


def test_jobs_start_as_their_own_process_with_no_fork_server():
    """Warm start (jobs handed to forks of a server over a socket) is gone (issue #16): its gain was
    never measured beside its cost, and it brought trust and signal problems. Start-up is hidden by
    admitting more GPU jobs than slots and by releasing the slot before outputs are written."""
    import importlib.util
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    assert importlib.util.find_spec("pifi.warm") is None
    code = [*(repo / "src/pifi").glob("*.py"), *(repo / "workflow/scripts").glob("*.py"),
            *(repo / "workflow/rules").glob("*.smk"), repo / "Snakefile", repo / "config.yaml",
            repo / "workflow/schemas/config.schema.yaml", *(repo / "profiles").rglob("*.yaml")]
    server = re.compile(r"os\.fork\b|AF_UNIX|socket\.socket|warm_start|pifi\.warm|PIFI_WARM")
    assert [str(p.relative_to(repo)) for p in code if server.search(p.read_text(encoding="utf-8"))] == []
    train = (repo / "workflow/scripts/train.py").read_text(encoding="utf-8")
    # startup_seconds (timings.json) counts the imports: the clock is read before them
    assert train.index("STARTED_AT = time.time()") < train.index("from pifi.artifacts import")
    # the GPU slot goes back before the outputs are written
    assert train.index("release_device(device)") < min(train.index(f"{w}(out.") for w in
                                                       ("write_parquet", "write_json", "write_safetensors"))
