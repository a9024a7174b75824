# lbc_mm: `make demo`, `make test` and `make docs` set the environment up when it is missing or
# stale (setup.py or tools/setup_env.sh newer than the stamp), then run.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lbc_mm_env
# Install into an existing environment (e.g. a GPU box with CUDA torch):
#   make install-existing PYTHON=/path/to/python
PYTHON ?= python3

.PHONY: env demo lint test docs install-existing clean-env
LINT_PATHS := lbc_mm tools configs tests setup.py lbc_mm_config_hook.py

env: $(STAMP)

$(STAMP): setup.py tools/setup_env.sh
	bash tools/setup_env.sh $(VENV)

demo: $(STAMP)
	PYTHON=$(PY) bash tools/run_demo.sh

# ruff (settings: ruff.toml); installed by the `tests` extra.
lint: $(STAMP)
	$(PY) -m ruff check $(LINT_PATHS)

# The docs site (Sphinx + MyST, docs/conf.py) into docs/_build/html; warnings are
# errors (a broken reference or docstring fails), nothing is downloaded.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html -d docs/_build/doctrees docs docs/_build/html

test: lint
	$(PY) -m pytest tests
	$(MAKE) docs

install-existing:
	LBC_PYTHON=$(PYTHON) bash tools/setup_env.sh --existing

clean-env:
	rm -rf $(VENV)
