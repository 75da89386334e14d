# codecbench — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup sandbox-tools browser-tools test demo proto proto-lint lint bench chaos clean web-screens

setup: sandbox-tools browser-tools $(STAMP)

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

# The web view's browser tests drive Debian's chromium (Playwright never downloads a browser here):
# installed when missing and we are root with apt; otherwise those tests are skipped, naming the package.
browser-tools:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "make setup: installing chromium, which the web view's browser tests drive (apt-get install chromium)"; \
			apt-get update -qq && apt-get install -y -qq chromium; \
		else \
			echo "make setup: chromium is missing: install the package 'chromium' to run the web view's browser" \
				"tests; until then they are skipped"; \
		fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "codecbench needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned, so nothing below picks another version. Which build pip takes is the index's:
	# PyPI's Linux x86_64 wheel is the CUDA build (what a GPU worker wants); a CPU-only machine may point
	# pip at a CPU wheel (PIP_INDEX_URL / PIP_FIND_LINKS, as this project's CI machines do).
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Screenshots of each page of `codecbench web` (out/web/*.png), taken by its browser tests.
web-screens: setup
	CODECBENCH_WEB_SCREENS=out/web $(PY) -m pytest tests/test_web_browser.py -q -p no:cacheprovider

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
