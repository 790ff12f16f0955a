# Ciclo — every target installs what it needs first, so a fresh clone needs only `make run` / `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest

.PHONY: install run test unit integration e2e lint typecheck bench clean

install: $(STAMP)

# Rebuilt only when the dependency list changes: `make install` is quick when up to date.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: install
	$(BIN)/ciclo run

test: install
	$(PYTEST) -q

unit: install
	$(PYTEST) -q tests/unit

integration: install
	$(PYTEST) -q tests/integration

e2e: install
	$(PYTEST) -q tests/e2e

lint: install
	$(BIN)/ruff check shared services tests bench
	$(BIN)/ruff format --check shared services tests bench

typecheck: install
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .ciclo .pytest_cache .mypy_cache .ruff_cache
