# Two commands: `make demo` and `make test`. Both set everything up first, idempotently.
# Everything installed or downloaded lives under .cache/ (pip, npm, models), keyed by content.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
CACHE := .cache
STAMPS := $(CACHE)/stamps
export PIP_CACHE_DIR := $(abspath $(CACHE)/pip)
export npm_config_cache := $(abspath $(CACHE)/npm)
export SPECACTOR_CACHE := $(abspath $(CACHE))
# onnxruntime-node ships CPU binaries; its install script would otherwise fetch CUDA ones. The
# documented environment variable, not an .npmrc key (npm warns about unknown keys on every npx).
export ONNXRUNTIME_NODE_INSTALL := skip
NODE_BIN := node bin/specactor.js

.PHONY: setup demo test test-ts test-python lint models wheel clean FORCE

setup: $(STAMPS)/venv $(STAMPS)/npm dist/.built

# The virtual environment is rebuilt when pyproject.toml changes (the stamp holds its hash).
PYPROJECT_HASH := $(shell sha256sum pyproject.toml | cut -c1-16)
$(STAMPS)/venv: pyproject.toml FORCE
	@mkdir -p $(STAMPS)
	@if [ ! -f $@ ] || [ "$$(cat $@)" != "$(PYPROJECT_HASH)" ] || ! $(PY) -c 'import specactor' 2>/dev/null; then \
	  echo "== python environment ($(VENV))"; \
	  [ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install -q --upgrade pip && \
	  $(PY) -m pip install -q -e '.[test,verl]' && \
	  echo $(PYPROJECT_HASH) > $@; \
	else touch $@; fi

$(STAMPS)/npm: package.json package-lock.json .npmrc
	@mkdir -p $(STAMPS)
	@echo "== node packages"
	@npm ci --no-fund --no-audit --loglevel=error
	@touch $@

dist/.built: $(STAMPS)/npm tsconfig.json $(shell find src test/ts -name '*.ts')
	@echo "== typescript build"
	@npx --no-install tsc -p tsconfig.json
	@touch $@

# A wheel that carries the compiled server (setup.py copies dist/src, bin/ and the npm manifests in).
wheel: setup
	@$(PY) -m build --wheel --outdir wheelhouse

models: setup
	@$(NODE_BIN) prepare-model tiny >/dev/null
	@$(NODE_BIN) prepare-model smollm2 >/dev/null

demo: models
	@bash examples/demo.sh

test: models
	@$(MAKE) --no-print-directory lint test-ts test-python

lint: setup
	@echo "== lint (ruff; TypeScript is type-checked by the build)"
	@$(VENV)/bin/ruff check python test/python
	@$(VENV)/bin/ruff format --check python test/python

test-ts: setup
	@echo "== typescript tests"
	@node --test --test-reporter=spec dist/test/ts/

test-python: setup
	@echo "== python tests"
	@$(PY) -m pytest -q test/python

clean:
	rm -rf dist $(STAMPS)
