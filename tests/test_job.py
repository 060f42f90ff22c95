"""What every workflow script does first (``pifi.job``): threads, and no torch where none is needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CPU_SIDE = ["pifi.artifacts", "pifi.job", "pifi.data", "pifi.evaluation", "pifi.choice", "pifi.summary",
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
