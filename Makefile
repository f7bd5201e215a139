# The two set-up commands of README.md. Each creates .venv if needed and installs
# what it uses, so both work on a fresh machine with Python 3.11+ and make.
PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
DATA := $(CURDIR)/data
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Main job on the embedded sample data: generate the log, ingest it, analyze it, train.
run: $(STAMP)
	$(BIN)/audience generate --out $(DATA)/raw
	$(BIN)/audience ingest $(DATA)/raw/events.parquet --catalog $(DATA)/raw/products.parquet --out $(DATA)/sample
	$(BIN)/audience analyze $(DATA)/sample --out $(CURDIR)/results
	$(BIN)/audience train $(DATA)/sample --out $(CURDIR)/artifacts

## Lint, format check, strict typing of the library, then the test suite.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

## Speed and peak memory of generate and ingest (README "Benchmarks").
bench: $(STAMP)
	$(BIN)/python benchmarks/ingest_speed.py

clean:
	rm -rf $(VENV) $(DATA)
