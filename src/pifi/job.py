"""What every workflow script does first: log to the rule's log, claim a GPU, pick the device.

Scripts stay thin: they read ``snakemake.input/params``, call the library and write outputs.
A job's stderr goes to its log; if the job fails, one line naming the rule, the error and the log
is also printed on the console Snakemake is showing, so the reason is where the user looks.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from pifi.interrupts import stop_on_signals
from pifi.progress import echo_to_console

if TYPE_CHECKING:
    import torch

log = logging.getLogger("pifi")
_console = None  # Snakemake's console (this job's stderr before start_job sent it to the log)


def start_job(snakemake) -> logging.Logger:
    """Send this process's stderr (warnings, progress) and logging to the rule's log file.

    SIGTERM (a process manager, Snakemake forwarding one) stops the job like Ctrl-C: see pifi.interrupts.
    """
    global _console
    stop_on_signals()
    if snakemake.log:
        _console = os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1)  # Snakemake's console
        handle = open(snakemake.log[0], "a", buffering=1)
        os.dup2(handle.fileno(), sys.stderr.fileno())  # C-level output too
        sys.stderr = handle
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not sys.stderr.isatty():
        _quiet_progress_bars()
    logging.captureWarnings(True)
    warnings.simplefilter("once")  # a warning raised in a loop is logged once, not per step
    sys.excepthook = _report_failure(snakemake)
    # As many CPU threads as the rule was given: parallel jobs must not oversubscribe the cores.
    # torch is only imported by the jobs that use it; one imported later reads OMP_NUM_THREADS.
    threads = max(1, int(snakemake.threads))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    log.info("rule %s, wildcards %s, threads %d", snakemake.rule, dict(snakemake.wildcards.items()), threads)
    # a long step's progress reaches the console too (at most a line a minute), named by rule and wildcards
    echo_to_console(console_line, " ".join([snakemake.rule, "/".join(str(v) for _, v in snakemake.wildcards.items())]).strip())
    return log


def config_base(snakemake) -> Path:
    """What relative paths in the config (datasets, models) are resolved against: the repository root
    (the folder of the Snakefile and config.yaml), whatever ``--directory`` the project runs in."""
    return Path(snakemake.scriptdir).resolve().parents[1]


def _quiet_progress_bars() -> None:
    """Library progress bars (weight loading, downloads) would be lines of carriage returns in a log."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub is imported
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def failure_line(rule: str, wildcards: dict, error: BaseException, log_path: str | None) -> str:
    """One line a person can act on: where it failed, what the error says, where the rest is."""
    message = " ".join(str(error).split()) or type(error).__name__
    where = ", ".join(f"{k}={v}" for k, v in wildcards.items())
    tail = f" (traceback: {log_path})" if log_path else ""
    return f"PiFi error in {rule}[{where}]: {type(error).__name__}: {message}{tail}"


def console_line(text: str) -> None:
    """One line on the console Snakemake shows (not only in this job's log): progress a person follows."""
    stream = _console or sys.__stderr__
    stream.write(text + "\n")
    stream.flush()


def _report_failure(snakemake):
    def hook(kind, error, tb):
        if issubclass(kind, KeyboardInterrupt):
            # Not a crash: Snakemake's process prints the one line that says how to resume.
            log.warning("interrupted (%s); finished epochs are kept for the resume", error or "Ctrl-C")
            return
        log.error("job failed:\n%s", "".join(traceback.format_exception(kind, error, tb)).rstrip())
        console_line(failure_line(snakemake.rule, dict(snakemake.wildcards.items()), error,
                                  snakemake.log[0] if snakemake.log else None))

    return hook


def job_device(snakemake) -> torch.device:
    """Claim this job's GPU slot (if it declared one) and return the device to run on."""
    import torch

    from pifi.gpu import claim_gpus_for_job

    requested = snakemake.params.get("device", "auto")
    if requested == "cpu":
        log.info("device: cpu (config device: cpu)")
        return torch.device("cpu")
    claim_gpus_for_job(snakemake)
    if torch.cuda.is_available():
        device = torch.device("cuda")
        log.info("device: %s (%s)", device, torch.cuda.get_device_name(device))
        return device
    if requested == "cuda":
        raise RuntimeError("config device is cuda, but no CUDA GPU is visible to this job")
    log.info("device: cpu")
    return torch.device("cpu")


def release_device(device: "torch.device") -> None:
    """This job's GPU work is done: free its cached GPU memory and hand its slot to the next job.

    Writing outputs needs no GPU, and a job waiting for the slot has already paid its start-up,
    so the slot goes back seconds before process exit would return it. Drop references to the
    job's GPU tensors first, so that their memory goes too.
    """
    from pifi.gpu import claimed_slots, release_gpus

    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    if claimed_slots():
        log.info("GPU work done: releasing %s", ", ".join(f"GPU {gpu} slot {slot}" for gpu, slot in claimed_slots()))
    release_gpus()
