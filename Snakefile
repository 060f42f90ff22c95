# PiFi-ILM: which LLM layer to plug into a small model, and does it beat the baseline?
# data -> hidden states -> PCA -> layer effects -> selected layer -> PiFi training -> evaluation -> summary
from snakemake.utils import min_version

min_version("9.0")

# The real experiment; --configfile files are merged over it (e.g. configs/demo.yaml).
configfile: f"{workflow.basedir}/config.yaml"


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
        summary_outputs(),
