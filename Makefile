# hdsvault: two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(HOME)/.local/bin/uv
endif
PYTEST_WORKERS ?= 2

.PHONY: help setup native system run test bench lint format typecheck clean

help:
	@echo "make run    - set up and serve on 127.0.0.1:8080 (embedded SQLite + local files)"
	@echo "make test   - set up (system packages included) and run the whole suite"
	@echo "make bench  - side-by-side benchmarks (bench/)"
	@echo "make lint   - ruff + mypy"

$(UV):
	python3 -m pip install --user --quiet "uv==$(UV_VERSION)"

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --quiet --compile-bytecode
	@touch $@

setup: .venv/.synced native

# The journal verifier's compiled inner loop (optional outside CI: see the script).
native: .venv/.synced
	@bash scripts/build-native.sh .venv/bin/python

system:
	bash scripts/setup-system.sh

run: setup
	@if [ ! -d var ]; then $(UV) run --frozen hdsvault init; fi
	$(UV) run --frozen hdsvault serve

test: setup system native
	$(UV) run --frozen pytest -n $(PYTEST_WORKERS) --dist loadfile

bench: setup
	bash scripts/setup-system.sh --bench
	$(UV) run --frozen python -m bench

lint: setup
	$(UV) run --frozen ruff check src tests bench tools
	$(UV) run --frozen ruff format --check src tests bench tools
	$(UV) run --frozen mypy

format: setup
	$(UV) run --frozen ruff format src tests bench tools
	$(UV) run --frozen ruff check --fix src tests bench tools

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
