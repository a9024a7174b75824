# lbc_mm: `make demo` and `make test` set the environment up when it is missing or
# stale (setup.py or tools/setup_env.sh newer than the stamp), then run.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lbc_mm_env
# Install into an existing environment (e.g. a GPU box with CUDA torch):
#   make install-existing PYTHON=/path/to/python
PYTHON ?= python3

.PHONY: env demo lint test install-existing clean-env
LINT_PATHS := lbc_mm tools configs tests setup.py lbc_mm_config_hook.py

env: $(STAMP)

$(STAMP): setup.py tools/setup_env.sh
	bash tools/setup_env.sh $(VENV)

demo: $(STAMP)
	PYTHON=$(PY) bash tools/run_demo.sh

# ruff (settings: ruff.toml); installed by the `tests` extra.
lint: $(STAMP)
	$(PY) -m ruff check $(LINT_PATHS)

test: lint
	$(PY) -m pytest tests

install-existing:
	LBC_PYTHON=$(PYTHON) bash tools/setup_env.sh --existing

clean-env:
	rm -rf $(VENV)
