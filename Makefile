# Two entry points for a fresh machine:  `make repro` (set up, run the pipeline)  and  `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup repro test report clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

repro: setup          ## set up, then run the default pipeline (about 21 min on 2 CPU cores)
	dvc repro
	dvc metrics show

test: setup           ## set up, then run the unit and end-to-end tests
	python -m pytest tests

report: setup         ## rewrite the README's results table from metrics/
	python -m lib.report README.md

clean-venv:
	rm -rf $(VENV)
