# Two entry points for a fresh machine: `make run` and `make test`.
# Each creates .venv if missing and installs only what is missing (a stamp file records the
# installed state of pyproject.toml), so a second call installs nothing.

SHELL := /bin/bash
PY := .venv/bin/python
PIP := .venv/bin/pip
STAMP := .venv/.installed
TEST_STAMP := .venv/.installed-test
# CPU build from the machine's disk; users with GPUs may install any torch >= 2.4 themselves.
TORCH_PIN := torch==2.13.0
CONSTRAINTS := .venv/constraints.txt
SYSTEM_PACKAGES := chromium redis-server

.PHONY: run test lint install install-test system-deps clean

run: install
	$(PY) -m app.cli run

test: install-test system-deps
	bash scripts/test.sh

lint: install-test
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

.venv/bin/python:
	python3 -m venv .venv
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | .venv/bin/python
	echo "$(TORCH_PIN)" > $(CONSTRAINTS)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet "$(TORCH_PIN)"
	$(PIP) install --quiet -c $(CONSTRAINTS) -e .
	touch $@

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	# DiCE, the counterfactual peer of `flipscope bench emap --peer dice`: without its optional
	# dependencies (xgboost, lightgbm and a CUDA library it never uses here).
	$(PIP) install --quiet --no-deps dice-ml==0.12 raiutils==0.4.2
	touch $@

install: $(STAMP)

install-test: $(TEST_STAMP)

# Debian's chromium (browser tests, PNG export) and redis-server (scale-out tests); never `playwright install`.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

clean:
	rm -rf .venv .pytest_cache .ruff_cache .mypy_cache
