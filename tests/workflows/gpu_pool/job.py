"""One toy job: claim the declared GPUs, sleep, record what happened."""

import json
import logging
import os
import sys
import time

from pifi.gpu import claim_gpus_for_job

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
slots = claim_gpus_for_job(snakemake)  # noqa: F821 (injected by snakemake's script:)
start = time.time()
pid_file = snakemake.params.get("pid_file")  # noqa: F821
if pid_file:
    with open(pid_file, "w") as fh:
        json.dump({"pid": os.getpid(), "slots": slots}, fh)
time.sleep(snakemake.params.sleep)  # noqa: F821
record = {"slots": slots, "pid": os.getpid(), "start": start, "end": time.time(),
          "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
with open(snakemake.output[0], "w") as fh:  # noqa: F821
    json.dump(record, fh)
