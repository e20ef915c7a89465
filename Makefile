# The two commands a new user needs are `make test` and (later) `make demo`; both create or update
# .venv first, so they work on a fresh clone with nothing installed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BASE_STAMP := $(VENV)/.installed-base
BENCH_ARGS ?=
# the official-path comparator (shared/bench/official_torch_step.py), kept outside the repo
OFFICIAL_BENCH ?=
WORKDIR ?= workdir/demo

.PHONY: install test lint bench demo

# The package alone (what `make demo` runs on), then the test tools and the PyTorch references.
$(BASE_STAMP): setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(BASE_STAMP)

$(STAMP): $(BASE_STAMP)
	$(PY) -m pip install -q -e ".[dev,torch,eval]"
	touch $(STAMP)

install: $(STAMP)

demo: $(BASE_STAMP)
	$(VENV)/bin/vgpt demo --config experiments/demo.py --workdir $(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -n 2 -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check vgpt_jax experiments data_pipelines tests setup.py
	$(VENV)/bin/ruff format --check vgpt_jax experiments data_pipelines tests setup.py

bench: $(STAMP)
	$(VENV)/bin/vgpt bench $(if $(OFFICIAL_BENCH),--official $(OFFICIAL_BENCH)) $(BENCH_ARGS)
