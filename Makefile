# codecbench — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup sandbox-tools test demo proto proto-lint lint bench chaos clean

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

lint: setup proto-lint
	$(PY) -m ruff check .
	$(PY) -m mypy

# buf checks the protocol (buf.yaml): every element commented (STANDARD + COMMENTS), formatted, and,
# once a release tag exists, compatible with it (v1 only grows). buf comes from npm, pinned in
# package-lock.json; Node.js and npm are Debian's packages nodejs and npm.
BUF := node_modules/.bin/buf
$(BUF): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make: npm is missing: install Node.js and npm (Debian: apt-get install nodejs npm)"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $(BUF)

proto-lint: $(BUF)
	$(BUF) lint
	$(BUF) format --diff --exit-code
	@tag=$$(git describe --tags --abbrev=0 --match 'v[0-9]*' 2>/dev/null || true); \
	if [ -n "$$tag" ]; then echo "buf breaking against $$tag"; $(BUF) breaking --against ".git#tag=$$tag"; \
	else echo "buf breaking: no release tag yet, nothing to compare against"; fi

bench: setup
	$(PY) -m bench

# Robustness under SIGKILLs, a fuzz of every RPC, a full disk; writes chaos/RESULTS.md (not in `make test`:
# tests/test_chaos.py runs the same code at a small size).
chaos: setup
	$(PY) -m chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) out node_modules examples/node/node_modules
