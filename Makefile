# Ciclo — every target installs what it needs first, so a fresh clone needs only `make run` / `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest
# Test processes for `make test` (pytest-xdist). The suite spends most of its time waiting on
# servers, brokers and timers, so more workers than cores still shortens it; 0 runs it in one process.
TEST_WORKERS ?= 3

.PHONY: install system-deps run test unit integration e2e lint typecheck bench bench-ingest bench-journey bench-dispatch bench-predict bench-intelligence bench-backfill clean

# Debian tools the deployment tests use: docker-compose (`config` check of deploy/compose.yaml,
# no engine needed) and promtool (from `prometheus`, checks and unit-tests the alert rules).
DEB_TOOLS := docker-compose:docker-compose promtool:prometheus

install: $(STAMP)

system-deps:
	@missing=""; for pair in $(DEB_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  echo "installing Debian packages:$$missing"; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Rebuilt only when the dependency list changes: `make install` is quick when up to date.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: install
	$(BIN)/ciclo run

test: install system-deps
	$(PYTEST) -q -n $(TEST_WORKERS)

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

# Only `ciclo serve ingest` alone on Kafka (single events and batches, CPU per request/event) and
# the FastAPI/Kafka baselines it is compared with; the other sections keep their last figures.
bench-ingest: install
	$(BIN)/python -m bench --only baselines,ingest

# Only the journey engine, in process (events/s, 1M timers, memory); the other sections of
# bench/results.md keep their last figures.
bench-journey: install
	$(BIN)/python -m bench --only journey

# One dispatch process against a fake SendGrid answering in 50 ms (messages/s, CPU, profile);
# the other sections of bench/results.md keep their last figures.
bench-dispatch: install
	$(BIN)/python -m bench --only dispatch

# RFM + BG/NBD + Gamma-Gamma for 100,000 customers on one core.
bench-predict: install
	$(BIN)/python -m bench --only predict

# What profile, score, stage and segment upkeep add to the journey engine's cost per event: upkeep
# off vs on, pure CPU (apply_event, with a breakdown) and end to end on SQLite and PostgreSQL.
bench-intelligence: install
	$(BIN)/python -m bench --only intelligence

# `ciclo import` of 500,000 events into the embedded bus: a file in order and the same shuffled.
bench-backfill: install
	$(BIN)/python -m bench --only backfill

clean:
	rm -rf $(VENV) .ciclo .pytest_cache .mypy_cache .ruff_cache
