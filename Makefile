# lbc_mm: `make demo` and `make test` set the environment up when it is missing or
# stale (setup.py or tools/setup_env.sh newer than the stamp), then run.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lbc_mm_env
# Install into an existing environment (e.g. a GPU box with CUDA torch):
#   make install-existing PYTHON=/path/to/python
PYTHON ?= python3

.PHONY: env demo test install-existing clean-env

env: $(STAMP)

$(STAMP): setup.py tools/setup_env.sh
	bash tools/setup_env.sh $(VENV)

demo: $(STAMP)
	PYTHON=$(PY) bash tools/run_demo.sh

test: $(STAMP)
	$(PY) -m pytest tests

install-existing:
	LBC_PYTHON=$(PYTHON) bash tools/setup_env.sh --existing

clean-env:
	rm -rf $(VENV)
