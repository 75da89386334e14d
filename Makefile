# codecbench — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup sandbox-tools test demo proto lint bench chaos clean

setup: sandbox-tools $(STAMP)

# Agents are sandboxed with bubblewrap (bwrap): installed when missing and we are root with apt.
sandbox-tools:
	@if ! command -v bwrap >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "make setup: installing bubblewrap (bwrap), which sandboxes agents (apt-get install bubblewrap)"; \
			apt-get update -qq && apt-get install -y -qq bubblewrap; \
		else \
			echo "make setup: bubblewrap (bwrap) is missing: install the package 'bubblewrap' to sandbox agents;" \
				"until then workers need --isolation process, and the sandbox tests are skipped"; \
		fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "codecbench needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch first, so nothing below pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m codecbench.demo

proto: setup
	$(PY) -m codecbench.protogen

lint: setup
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: setup
	$(PY) -m bench

# Robustness under SIGKILLs, a fuzz of every RPC, a full disk; writes chaos/RESULTS.md (not in `make test`:
# tests/test_chaos.py runs the same code at a small size).
chaos: setup
	$(PY) -m chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) out
