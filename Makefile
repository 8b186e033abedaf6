# Two commands for a new user:  `make demo` (set up, render an image)  and  `make test` (set up, run the tests).
#
# Set-up installs into the active virtual environment if there is one (so a CUDA torch you already have is kept),
# else into ./.venv. torch is installed only when the environment has none: where no NVIDIA driver is present,
# only a CPU build is accepted (torch==X+cpu: a local wheel, or the index given as TORCH_INDEX_URL), so a
# machine without CUDA never downloads the multi-GB CUDA build; where a driver is present, the default build.

PYTHON ?= python3
ENV_DIR := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),$(CURDIR)/.venv)
BIN := $(ENV_DIR)/bin
TORCH_VERSION ?= 2.13.0
TORCH_INDEX_URL ?=
STAMP := $(ENV_DIR)/.graph-runtime-installed
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1

SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup demo test lint bench clean-env browser

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(ENV_DIR)

$(STAMP): pyproject.toml | $(BIN)/python
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "keeping the installed torch: $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	else \
		if command -v nvidia-smi >/dev/null 2>&1; then spec="torch==$(TORCH_VERSION)"; \
		else spec="torch==$(TORCH_VERSION)+cpu"; fi; \
		$(BIN)/python -m pip install "$$spec" $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL)); \
	fi
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

demo: setup
	$(BIN)/graph-runtime run workflows/txt2img.json --output-dir output

# The editor is tested in a real browser: Debian's Chromium (never a browser download of a test tool's own).
# Where it is missing, `make test` runs `[sudo] apt-get install chromium`; without apt-get it stops with one line.
CHROMIUM_HELP := the editor test needs Chromium on PATH: install it with your package manager and run make test again
browser:
	@command -v chromium >/dev/null 2>&1 || command -v apt-get >/dev/null 2>&1 || \
		{ echo "error: chromium not found and apt-get is not available; $(CHROMIUM_HELP)" >&2; exit 1; }
	@command -v chromium >/dev/null 2>&1 || test -z "$(SUDO)" || command -v sudo >/dev/null 2>&1 || \
		{ echo "error: chromium not found, and installing it needs root (no sudo here); $(CHROMIUM_HELP)" >&2; exit 1; }
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the editor test: $(SUDO) apt-get install chromium"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

test: browser setup
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/python -m ruff check .

bench: setup
	$(BIN)/python bench/bench_engine.py

clean-env:
	rm -rf .venv
