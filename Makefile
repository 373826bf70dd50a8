# Two commands do all set-up on a fresh Linux machine:
#   make dashboard   create .venv if missing, install, serve the Voila dashboard (PORT=8866)
#   make test        same set-up, then unit tests, notebooks (nbval) and browser tests (Chromium)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON  ?= python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
PORT    ?= 8866
LAB_PORT ?= 8888
HOST    ?= 127.0.0.1
COURSE  ?= build/course
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM
STAMP   := $(VENV)/.installed
# Keep tests, notebooks and the dashboard deterministic and within the 2-core budget.
export PYTHONHASHSEED := 0
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1

.PHONY: help setup student dashboard lab test test-unit test-notebooks test-browser browser screenshot bench lock clean

help:
	@echo "make dashboard   serve notebooks/dashboard.ipynb with Voila at http://$(HOST):$(PORT)"
	@echo "make test        unit tests + notebooks (nbval) + browser tests"
	@echo "make lab         open the notebooks in JupyterLab at http://$(HOST):$(LAB_PORT) (lesson 01 first)"
	@echo "make student     nbgrader student copies of every lesson in $(COURSE)/release (COURSE=... to choose)"
	@echo "make screenshot  regenerate assets/dashboard.png"
	@echo "make bench       run the benchmark scripts (hook overhead; fused attention, on a GPU when present)"

# --- environment ---------------------------------------------------------------------------------------
$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dashboard,test,pretrained,kernels,classroom]'
	touch $@

setup: $(STAMP)

# Browser tests need a real Chromium; install Debian's package when we can, otherwise say what to install.
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian's chromium package for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null && command -v apt-get >/dev/null; then \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "ERROR: browser tests need Chromium at $(CHROMIUM)."; \
	    echo "Install it (Debian/Ubuntu: 'sudo apt-get install chromium') or set CHROMIUM=/path/to/chromium."; \
	    exit 1; \
	  fi; \
	fi
	@test -x "$(CHROMIUM)" || { echo "ERROR: $(CHROMIUM) still missing after install"; exit 1; }

# --- the two commands ----------------------------------------------------------------------------------
dashboard: setup
	cd notebooks && ../$(VENV)/bin/voila dashboard.ipynb --no-browser --port=$(PORT) --Voila.ip=$(HOST)

test: setup browser
	$(MAKE) --no-print-directory test-unit test-notebooks test-browser

test-unit: setup
	$(PY) -m pytest tests -m "not browser" -q -p no:cacheprovider

test-notebooks: setup
	$(PY) -m pytest notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=600 -q -p no:cacheprovider

test-browser: setup browser
	$(PY) -m pytest tests/browser -m browser -q -p no:cacheprovider

# --- extras --------------------------------------------------------------------------------------------
# JupyterLab refuses to start as root without --allow-root; root is the normal user in containers.
lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks --ServerApp.ip=$(HOST) --ServerApp.port=$(LAB_PORT) \
	  --LabApp.default_url=/lab/tree/01_receptive_fields.ipynb $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# Student copies for nbgrader: a course folder (COURSE) with every lesson as an assignment, solutions removed.
student: setup
	$(PY) -m explorer.classroom release $(COURSE)

screenshot: setup browser
	$(PY) tests/browser/screenshot.py assets/dashboard.png

bench: setup
	$(PY) -m explorer.bench.hook_overhead
	$(PY) -m explorer.bench.attention

lock: setup
	{ echo "# Exact versions of the environment that 'make dashboard' / 'make test' build (pip constraints)."; \
	  echo "# Regenerate with 'make lock' after changing dependencies in pyproject.toml (and environment.yml)."; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^attention-conv-explorer' | sed 's/+cpu$$//'; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
