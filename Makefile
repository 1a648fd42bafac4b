# Two entry points for a fresh machine:  `make repro` (set up, run the pipeline)  and  `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

SEEDS ?= 43 44
STUDENTS ?= efficientnet_b0 mobilenetv3_large mobilenetv3_small mnasnet
GRID ?= search.yaml
PRESET ?=

.PHONY: setup repro test test-all report exps plots seeds compare students search clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

repro: setup          ## set up, run the default pipeline (PRESET=name: a preset of presets/), print the results table
ifeq ($(PRESET),)
	dvc repro
else
	python -m lib.preset $(PRESET)
endif
	python -m lib.report

# A test's limit (its fixtures' builds included): a hang fails that test, with every thread's stack, and the run goes on.
TEST_TIMEOUT ?= 1800

test: setup           ## set up, then run the unit and end-to-end tests (all but the slow ones) on two workers
	python -m pytest -m "not slow" -n 2 --dist worksteal --timeout $(TEST_TIMEOUT) --durations=15 tests

test-all: setup       ## every test, the whole compression chain of every student included (about 30 min more)
	python -m pytest -n 2 --dist worksteal --timeout $(TEST_TIMEOUT) --durations=15 tests

report: setup         ## rewrite each generated table in its file: README.md and docs/ (recipes, students, pruning)
	python -m lib.report --write

exps: setup           ## the experiments table, narrow enough for a terminal: headline figures and changed params
	python -m lib.report --experiments

plots: setup          ## every plot of dvc.yaml on one page that opens offline: dvc_plots/offline.html
	python -m lib.plots_offline

seeds: setup          ## queue the pipeline once per seed in SEEDS and run the queue (one at a time)
	for s in $(SEEDS); do dvc exp run --queue -S seed=$$s; done
	dvc exp run --run-all

compare: setup        ## mean ± std over seeds, paired tests vs params.yaml's recipe, McNemar; into docs/recipes.md
	python -m lib.compare --save-exps plots/compare/experiments.json --md plots/compare/compare.md \
		--plot plots/compare/compare.png --json plots/compare/compare.json
	python -m lib.report --write

students: setup       ## queue the pipeline once per student in STUDENTS (default recipe), run it; into docs/students.md
	for s in $(STUDENTS); do dvc exp run --queue -S student=$$s; done
	dvc exp run --run-all
	python -m lib.compare --save-exps plots/students/experiments.json --md plots/students/compare.md \
		--metric int8_tflite.acc --metric int8_tflite.auc --metric int8_tflite.kb --metric int8_tflite.mmacs \
		--metric int8_tflite.ms --metric student_torch.acc --metric pruned_torch.acc
	python -m lib.report --write

search: setup         ## run the grid of GRID in the workspace (one teacher per seed); its Pareto front into README.md
	python -m lib.search run --grid $(GRID)
	python -m lib.search front --grid $(GRID)
	python -m lib.report --write

clean-venv:
	rm -rf $(VENV)
