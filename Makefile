# The two set-up commands of README.md. Each creates .venv if needed and installs
# what it uses, so both work on a fresh machine with Python 3.11+ and make.
PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
DATA := $(CURDIR)/data
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: run test bench clean chromium postgresql java

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Main job on the embedded sample data: generate the log, ingest, analyze, train,
## backtest, then serve the API and the UI on 127.0.0.1 until Ctrl-C.
run: $(STAMP)
	$(BIN)/audience generate --out $(DATA)/raw
	$(BIN)/audience ingest $(DATA)/raw/events.parquet --catalog $(DATA)/raw/products.parquet --out $(DATA)/sample
	$(BIN)/audience analyze $(DATA)/sample --out $(CURDIR)/results
	$(BIN)/audience train $(DATA)/sample --out $(CURDIR)/artifacts
	$(BIN)/audience evaluate $(DATA)/sample --out $(CURDIR)/results
	$(BIN)/audience serve --artifact $(CURDIR)/artifacts --host 127.0.0.1 --port $(PORT)

## Debian's Chromium for the browser tests (tests/test_ui.py); Playwright drives it by path.
chromium:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || echo "chromium missing (not root): install Debian's chromium for the browser tests"

## Debian's PostgreSQL for the store tests (tests/postgres.py starts a server of its own).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo "postgresql missing (not root): install Debian's postgresql for the store tests"

## Debian's Java runtime for the Spark engine's tests (Spark's local mode runs on it).
java:
	@command -v java >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null; }
	@command -v java >/dev/null 2>&1 || echo "java missing (not root): install Debian's default-jre-headless for the Spark tests"

## Lint, format check, strict typing of the library, then the test suite.
test: $(STAMP) chromium postgresql java
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

## Speed and peak memory of generate and ingest (docs/benchmarks.md).
bench: $(STAMP)
	$(BIN)/python benchmarks/ingest_speed.py

clean:
	rm -rf $(VENV) $(DATA)
