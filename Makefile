# t2sql: two commands on a fresh machine.
#
#   make quickstart   # create .venv, install, run the quickstart pipeline (prints the run directory last)
#   make test         # run the test suite (what CI runs)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart test install bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,encoder]'
	touch $@

install: $(BIN)/.installed

quickstart: $(BIN)/.installed
	$(BIN)/t2sql run --config configs/quickstart.yaml

test: $(BIN)/.installed
	$(BIN)/pytest

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/techniques.py
	$(BIN)/python benchmarks/eval_memory.py

clean:
	rm -rf .t2sql runs
