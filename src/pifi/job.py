"""What every workflow script does first: log to the rule's log, claim a GPU, pick the device.

Scripts stay thin: they read ``snakemake.input/params``, call the library and write outputs.
"""

from __future__ import annotations

import logging
import os
import sys

import torch

log = logging.getLogger("pifi")


def start_job(snakemake) -> logging.Logger:
    """Send this process's stderr (warnings, progress bars) and logging to the rule's log file."""
    if snakemake.log:
        handle = open(snakemake.log[0], "a", buffering=1)
        os.dup2(handle.fileno(), sys.stderr.fileno())  # C-level output too
        sys.stderr = handle
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # As many CPU threads as the rule was given: parallel jobs must not oversubscribe the cores.
    torch.set_num_threads(max(1, int(snakemake.threads)))
    log.info("rule %s, wildcards %s, threads %d", snakemake.rule, dict(snakemake.wildcards.items()),
             torch.get_num_threads())
    return log


def job_device(snakemake) -> torch.device:
    """Claim this job's GPU slot (if it declared one) and return the device to run on."""
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
