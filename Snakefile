# PiFi-ILM: which LLM layer to plug into a small model, and does it beat the baseline?
# data -> hidden states -> layer scores -> selected layer -> PiFi training (selected, last, sweep, race)
#      -> evaluation -> summary with statistics -> figures and report
import os
import sys

from snakemake.utils import min_version

from pifi.interrupts import forward_signals_to_jobs, print_interrupted

min_version("9.0")

# The real experiment; --configfile files are merged over it (e.g. configs/demo.yaml).
configfile: f"{workflow.basedir}/config.yaml"


# `snakemake --report report.html` collects the tables and figures flagged with report(); its first
# page is the verdicts the summary wrote (results/summary/report.rst), else the generic description.
# (--report paths are relative to --directory: `--directory demo --report report.html`.)
PAGE = os.path.abspath("results/summary/report.rst")
report: PAGE if os.path.exists(PAGE) else "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/hidden.smk"
include: "workflow/rules/selection.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/race.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/summary.smk"


rule all:
    input:
        final_outputs(),


onstart:
    # A signal to this process reaches the running jobs, which stop keeping their epoch checkpoints.
    forward_signals_to_jobs()
    print("PiFi: Snakemake's 'N of M steps' counts the jobs known so far and grows as checkpoints (data, "
          "models, layer selection) resolve, so its percentage can fall; each training job prints a line with "
          "the runs left and an estimate.", file=sys.stderr, flush=True)


onerror:
    print_interrupted()
