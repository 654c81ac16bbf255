# Two commands on a fresh machine: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP  := $(VENV)/.dexnode-installed
NPM_STAMP := node_modules/.dexnode-installed
CHROMIUM  := /usr/bin/chromium
SUDO      := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install demo test lint typecheck unit integration bench-decode bench-backfill bench-latency bench-storage bench-kafka bench-collation bench-cex bench-api bench-archive clean

install: $(PY_STAMP) $(NPM_STAMP) $(CHROMIUM)

# headless Chromium for the dashboard's browser test (tests/integration/test_dashboard.py): Debian's
# package, installed only when missing; the test drives it with the playwright wheel (no browser download)
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y --no-install-recommends chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(PY_STAMP): $(BIN)/python pyproject.toml cex/_speedups.c protocols/_speedups.c records/_codec.c records/_buffer.h api/_pagejson.c sinks/_copy.c sinks/_rdkafka.c
	$(BIN)/python -m pip install --quiet -e '.[dev,api,bench,archive]'
	touch $@

# anvil (its binary ships inside the npm platform package), the Uniswap artifacts and the dashboard's chart
# library (copied into api/static/vendor/, served at run time: no CDN), pinned by the
# lockfile. Not `npm ci`: it insists on every platform's optional anvil binary, which a registry
# mirror may not carry; `npm install --no-save` installs the lockfile's versions for this platform.
$(NPM_STAMP): package.json package-lock.json
	npm install --no-audit --no-fund --no-save --loglevel=error
	node_modules/.bin/anvil --version >/dev/null
	mkdir -p api/static/vendor
	cp node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.mjs api/static/vendor/lightweight-charts.js
	touch $@

demo: install
	$(BIN)/dexnode demo

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(PY_STAMP)
	$(BIN)/mypy

test: install lint typecheck
	$(BIN)/pytest

# the fast loop: pure tests on recorded and synthetic inputs, no Postgres, anvil or broker (tests/markers.py
# refuses a test that is marked neither unit nor integration, or a unit test that starts a real component)
unit: $(PY_STAMP)
	$(BIN)/pytest -m unit tests/unit

# real Postgres, anvil, the Kafka-protocol broker, replay servers (`make test` runs both, plus lint and mypy)
integration: install
	$(BIN)/pytest -m integration tests/integration

bench-decode: install
	$(BIN)/python bench/decode.py

# generates a 2,000-block devnet on first use (cached) and installs ethereum-etl into bench/.peer-venv
bench-backfill: install
	$(BIN)/python bench/backfill.py

# C against C.UTF-8 on dexnode's hex keys (ensure_database creates databases with the C collation)
bench-collation: install
	$(BIN)/python bench/collation.py

bench-latency: install
	$(BIN)/python bench/live_latency.py

bench-storage: install
	$(BIN)/python bench/storage.py

bench-kafka: install
	$(BIN)/python bench/kafka.py

# 1M generated dex_trades, 50 concurrent clients against `dexnode serve`, beside the same SQL alone
bench-api: install
	$(BIN)/python bench/api.py

# recorded CEX frames through dexnode and cryptofeed (installed once into .dexnode/bench/cryptofeed-venv)
bench-cex: install
	$(BIN)/python bench/cex.py

# a generated day of blocks, DEX trades and CEX trades: archived to Parquet, beside Postgres (docs/archive.md)
bench-archive: install
	$(BIN)/python bench/archive.py

clean:
	rm -rf $(VENV) node_modules .dexnode .dexnode-test-cache .mypy_cache .ruff_cache .pytest_cache
