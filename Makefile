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
HUB_PORT ?= 8000
# The environment students' servers run from when each student is their own Unix user: a root-owned, read-only copy
# of the project and .venv where every user can run it (explorer/deploy/shared_env.py). Python: a system interpreter
# every user can execute, of .venv's minor version.
HUB_ENV ?= /opt/attention-conv-explorer
HUB_PYTHON ?= /usr/bin/python3
# configurable-http-proxy (JupyterHub's proxy, a node program) lives under the venv, so 'make clean' removes it;
# its version (5.3.0) and every dependency's are pinned by explorer/deploy/package.json and package-lock.json.
NODE_DIR := $(VENV)/node
CHP_STAMP := $(NODE_DIR)/.installed
# Keep tests, notebooks and the dashboard deterministic and within the 2-core budget.
export PYTHONHASHSEED := 0
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1

.PHONY: help setup hub-proxy hub-env hub student dashboard lab test test-headless test-unit test-notebooks test-browser browser screenshot bench bench-bertviz lock clean

help:
	@echo "make dashboard   serve notebooks/dashboard.ipynb with Voila at http://$(HOST):$(PORT)"
	@echo "make test        unit tests + notebooks (nbval) + browser tests"
	@echo "make lab         open the notebooks in JupyterLab at http://$(HOST):$(LAB_PORT) (lesson 01 first)"
	@echo "make student     nbgrader student copies of every lesson in $(COURSE)/release (COURSE=... to choose)"
	@echo "make screenshot  regenerate assets/dashboard.png"
	@echo "make bench       run the benchmark scripts (hook overhead; fused attention, on a GPU when present)"
	@echo "make bench-bertviz  the attention app's first drawing beside bertviz's in JupyterLab (ARGS='--tokens 32 128')"
	@echo "make hub         serve JupyterHub for a class at http://$(HOST):$(HUB_PORT) (explorer/deploy/jupyterhub_config.py);"
	@echo "                 loopback demo: EXPLORER_HUB_AUTH=dummy EXPLORER_HUB_USERS='alice bob' EXPLORER_HUB_PASSWORD=... make hub"

# --- environment ---------------------------------------------------------------------------------------
$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dashboard,test,pretrained,kernels,classroom]'
	touch $@

# npm ci installs exactly the locked tree; reruns only when the lock changes (or the folder is gone).
$(CHP_STAMP): explorer/deploy/package.json explorer/deploy/package-lock.json
	@command -v npm >/dev/null || { echo "ERROR: JupyterHub's proxy needs node >= 20 and npm (Debian/Ubuntu: 'sudo apt-get install nodejs npm')"; exit 1; }
	@node -e 'process.exit(parseInt(process.versions.node, 10) < 20 ? 1 : 0)' || { echo "ERROR: configurable-http-proxy 5.3 needs node >= 20, found $$(node --version)"; exit 1; }
	mkdir -p $(NODE_DIR)
	cp explorer/deploy/package.json explorer/deploy/package-lock.json $(NODE_DIR)/
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	touch $@

hub-proxy: $(CHP_STAMP)

setup: $(STAMP) $(CHP_STAMP)

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
	cd notebooks && ../$(VENV)/bin/python ../explorer/deploy/voila_pool.py dashboard.ipynb --no-browser \
	  --port=$(PORT) --Voila.ip=$(HOST) --VoilaConfiguration.preheat_kernel=True \
	  --VoilaConfiguration.default_pool_size=$(or $(POOL),16)

# The browser tests (mostly waiting on servers and pages) run beside the unit tests and notebooks (mostly computing):
# two make jobs, each phase's output printed in one piece when it ends; either failing fails make test.
test: setup browser
	$(MAKE) --no-print-directory -j2 --output-sync=target test-browser test-headless

test-headless: setup
	$(MAKE) --no-print-directory -j1 test-unit test-notebooks

# Unit tests and notebooks run on both cores: two pytest-xdist workers, one torch thread each (two spin-waiting
# threads per worker would fight over the 2 cores), whole files per worker (module fixtures are built once).
XDIST   ?= -n 2 --dist loadfile
test-unit: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -m "not browser" $(XDIST) -q -p no:cacheprovider

test-notebooks: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest notebooks --nbval-lax --nbval-current-env --nbval-cell-timeout=600 $(XDIST) \
	  -q -p no:cacheprovider

# Two workers; a test's group (lab, hub, voila: the servers it shares) keeps it on one (tests/browser/conftest.py).
# One torch thread per process here too: the kernels, servers and browsers share the 2 cores with the unit tests.
test-browser: setup browser
	OMP_NUM_THREADS=1 $(PY) -m pytest tests/browser -m browser -n 2 --dist loadgroup -q -p no:cacheprovider

# --- extras --------------------------------------------------------------------------------------------
# JupyterLab refuses to start as root without --allow-root; root is the normal user in containers.
lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks --ServerApp.ip=$(HOST) --ServerApp.port=$(LAB_PORT) \
	  --LabApp.default_url=/lab/tree/01_receptive_fields.ipynb $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# Settings (authenticator, users, state folder, culling, memory limit, isolation) come from EXPLORER_HUB_*
# environment variables; explorer/deploy/jupyterhub_config.py documents each one. As root, each student runs as their
# own Unix account from $(HUB_ENV), (re)built first; otherwise set EXPLORER_HUB_ISOLATION=none (one account for all).
hub: setup
	@if [ "$$(id -u)" = 0 ] && [ "$${EXPLORER_HUB_ISOLATION:-users}" = users ]; then $(MAKE) --no-print-directory hub-env; fi
	EXPLORER_HUB_IP=$(HOST) EXPLORER_HUB_PORT=$(HUB_PORT) EXPLORER_HUB_ENV=$(HUB_ENV) \
	  $(VENV)/bin/jupyterhub -f explorer/deploy/jupyterhub_config.py

# Root only. Takes about 30 s (hard links from .venv); run again after changing the code or the environment.
hub-env: setup
	$(PY) -m explorer.deploy.shared_env $(HUB_ENV) --python $(HUB_PYTHON)

# Student copies for nbgrader: a course folder (COURSE) with every lesson as an assignment, solutions removed.
student: setup
	$(PY) -m explorer.classroom release $(COURSE)

screenshot: setup browser
	$(PY) tests/browser/screenshot.py assets/dashboard.png

bench: setup
	$(PY) -m explorer.bench.hook_overhead
	$(PY) -m explorer.bench.attention

# The attention app's first drawing beside bertviz's in one JupyterLab (explorer/bench/first_drawing.py). bertviz
# 1.4.1 (without its dependencies) and the scripts it takes from a CDN (from npm) go to .bench/bertviz, outside the
# project's environment; the browser is given the scripts from there.
BERTVIZ_DIR := .bench/bertviz
bench-bertviz: setup browser
	@test -f $(BERTVIZ_DIR)/python/bertviz/head_view.py || \
	    $(PY) -m pip install -q --no-deps --target $(BERTVIZ_DIR)/python bertviz==1.4.1
	@test -f $(BERTVIZ_DIR)/js/jquery.min.js || { \
	    mkdir -p $(BERTVIZ_DIR)/js && cd $(BERTVIZ_DIR)/js && \
	    npm pack -q requirejs@2.3.6 d3@5.7.0 jquery@2.1.0 >/dev/null && \
	    tar xzf requirejs-2.3.6.tgz -O package/require.js > require.js && \
	    tar xzf d3-5.7.0.tgz -O package/dist/d3.min.js > d3.min.js && \
	    tar xzf jquery-2.1.0.tgz -O package/dist/jquery.min.js > jquery.min.js && rm -f *.tgz; }
	CHROMIUM=$(CHROMIUM) $(PY) -m explorer.bench.first_drawing --bertviz $(BERTVIZ_DIR) $(ARGS)

lock: setup
	{ echo "# Exact versions of the environment that 'make dashboard' / 'make test' build (pip constraints)."; \
	  echo "# Regenerate with 'make lock' after changing dependencies in pyproject.toml (and environment.yml)."; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^attention-conv-explorer' | sed 's/+cpu$$//'; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
