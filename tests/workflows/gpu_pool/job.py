"""One toy job: claim the declared GPU slots, sleep, record what happened."""

import json
import logging
import os
import sys
import time

from pifi.gpu import claim_gpus_for_job, claimed_slots

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
gpus = claim_gpus_for_job(snakemake)  # noqa: F821 (injected by snakemake's script:)
# Recorded after the claim and before exit (which drops the locks): the
# [start, end] of two jobs on one slot can only overlap if the pool failed.
start = time.time()
slots = claimed_slots()
pid_file = snakemake.params.get("pid_file")  # noqa: F821
if pid_file:
    with open(pid_file, "w") as fh:
        json.dump({"pid": os.getpid(), "gpus": gpus, "slots": slots}, fh)
time.sleep(snakemake.params.sleep)  # noqa: F821
record = {"gpus": gpus, "slots": slots, "pid": os.getpid(), "start": start, "end": time.time(),
          "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
with open(snakemake.output[0], "w") as fh:  # noqa: F821
    json.dump(record, fh)
