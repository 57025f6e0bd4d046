# Everything a new machine needs: Python 3.11+ and make.
#   make run    serve the API on http://127.0.0.1:8000 (embedded PostgreSQL in ./.ledger/)
#   make test   the whole test suite, against real PostgreSQL
#   make lint   ruff and mypy --strict
#   make test-reliability   crashes, outages, load and hostile input
#   make test-browser   the operator console in Chromium (Debian's /usr/bin/chromium)
#   make screenshots    docs/console-user.png and docs/console-ledger.png, taken anew
#   make bench  benchmarks beside their baselines, with ratios

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; \
	then echo $$p; break; fi; done)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint test-reliability test-browser screenshots bench clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is needed (python3.11, python3.12, ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

run: $(VENV)/.installed
	$(BIN)/ledger serve

test: $(VENV)/.installed-dev
	$(BIN)/pytest tests --ignore=tests/reliability --ignore=tests/browser

test-reliability: $(VENV)/.installed-dev
	$(BIN)/pytest tests/reliability

test-browser: $(VENV)/.installed-dev
	$(BIN)/pytest tests/browser

screenshots: $(VENV)/.installed-dev
	LEDGER_SCREENSHOTS_DIR=docs $(BIN)/pytest tests/browser/test_screenshots.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
