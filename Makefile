# Agora developer commands. Each target sets itself up: the first run creates .venv, installs
# torch==2.13.0 (the CPU wheel) before anything else, then the project with its dev extras;
# later runs skip all of that unless pyproject.toml changed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH  := torch==2.13.0
STAMP  := $(VENV)/.agora-installed
PIP    := $(PY) -m pip --disable-pip-version-check --quiet

.PHONY: help setup demo test lint prometheus proto bench bench-quick clean

help:
	@echo "make demo    agora simulate: a teacher, two students and a no-teacher baseline learn; report in demo-run/"
	@echo "make test    lint (ruff, mypy) and run the test suite (installs Debian's prometheus if missing)"
	@echo "make lint    ruff and mypy only"
	@echo "make proto   regenerate node/rpc/ from proto/"
	@echo "make bench   run the benchmarks (full mode) and write bench/results/"
	@echo "make bench-quick   the same, each in its quick mode (<= 3 minutes each)"
	@echo "make setup   create .venv and install (done by the targets above when needed)"
	@echo "make clean   remove .venv and caches"

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: a bare `torch` requirement would pull a CUDA build (gigabytes).
$(STAMP): pyproject.toml | $(PY)
	@echo "==> installing $(TORCH), then agora[dev] into $(VENV) (first run only)"
	$(PIP) install $(TORCH)
	$(PIP) install -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# The whole product in one command: `agora simulate` with its defaults (README, "Simulate a network").
# A rerun reuses the teacher trained by the first one (demo-run/models) and replaces the rest.
demo: setup
	rm -rf demo-run/nodes demo-run/logs
	$(VENV)/bin/agora simulate --out demo-run

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint prometheus
	$(PY) -m pytest

# tests/test_prometheus.py scrapes real nodes with a real Prometheus server and lints their
# /metrics with `promtool check metrics`; CI machines start without either, so install Debian's
# package (both binaries) when one is missing. Only `make test` needs it, not `make lint`. The
# package's Recommends (node-exporter, a second daemon) are not wanted.
prometheus:
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo=sudo; else \
	  echo "make test needs prometheus and promtool: run as root (or with sudo), or apt-get install prometheus" >&2; \
	  exit 1; fi; \
	echo "==> installing Debian's prometheus (prometheus, promtool) for tests/test_prometheus.py"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

proto: setup
	$(PY) -m node.protogen

BENCHMARKS := serving network dp_sgd lesson_rpc tnd_mini tripost_mini yoda_mini stage_b_loss social_mini

bench: setup
	@for name in $(BENCHMARKS); do $(PY) -m bench.$$name || exit 1; done

bench-quick: setup
	@for name in $(BENCHMARKS); do $(PY) -m bench.$$name --quick || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
