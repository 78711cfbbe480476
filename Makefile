# chat_ws: demo site, tests and benchmarks. Everything runs from a venv in the checkout.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install run serve cluster test test-browser test-js lint bench stress chaos clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements/runtime.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# The demo on HOST:PORT; the URL is printed once it listens (REDIS_URL etc. from the env).
SERVE := $(BIN)/python devtools/serve.py --host $(HOST) --port $(PORT)

# The development demo: daphne, DEBUG on unless DJANGO_DEBUG says otherwise.
run: install
	$(BIN)/python manage.py migrate --noinput
	$(SERVE) --server daphne

# The demo as it runs in production: uvicorn (uvloop, httptools), DJANGO_DEBUG=0 (the demo still
# serves its own static files: SERVE_STATIC=1); HOST, PORT and REDIS_URL from the environment.
serve: install
	$(BIN)/python manage.py migrate --noinput
	DJANGO_DEBUG=0 SERVE_STATIC=1 $(SERVE) --server uvicorn

# A local Redis Cluster (3 masters) and 2 layer hosts until Ctrl-C; prints the exports for make run.
cluster: install
	$(BIN)/python -m devtools.redis_cluster up

test: install
	$(BIN)/mypy
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory test-js

test-js:
	@if [ -d tests/js ]; then node --test tests/js/; fi

test-browser: install
	$(BIN)/python -m pytest -m browser

# Against a running `make run` (see docs/benchmarks.md for the environment it needs).
stress: install
	$(BIN)/python -m loadtest --url ws://$(HOST):$(PORT)/ws $(STRESS_ARGS)

# Not part of CI: about three minutes. Starts its own Redis, database and demo servers, kills and
# restarts them under load, then checks the ledger (docs/chaos.md); CHAOS_ARGS e.g. --server mixed.
chaos: install
	$(BIN)/python -m loadtest --scenario chaos $(CHAOS_ARGS)

# Not part of CI: about ten minutes; writes bench/results/latest.{md,png,json}.
bench: install
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) db.sqlite3 staticfiles test-results
