# PiFi-ILM: which LLM layer to plug into a small model, and does it beat the baseline?
# data -> hidden states -> layer scores -> selected layer -> PiFi training (selected, last, sweep)
#      -> evaluation -> summary with statistics -> figures and report
from snakemake.utils import min_version

min_version("9.0")

# The real experiment; --configfile files are merged over it (e.g. configs/demo.yaml).
configfile: f"{workflow.basedir}/config.yaml"


# `snakemake --report report.html` collects the tables and figures flagged with report().
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/hidden.smk"
include: "workflow/rules/selection.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/summary.smk"


rule all:
    input:
        final_outputs(),
