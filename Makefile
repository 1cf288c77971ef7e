# `make run` and `make test` do everything on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf
HOST ?= 127.0.0.1
PORT ?= 8000
# A portable llama.cpp build: the native one uses CPU features (AMX) that crash in some VMs.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: run test install model assets browser postgres lint bench bench-serving bench-1m clean

run: install model assets
	@echo "Open http://$(HOST):$(PORT)/ in your browser."
	$(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT) --no-proxy-headers

test: install model assets browser postgres
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

model: $(MODEL)

$(MODEL):
	$(BIN)/python scripts/fetch_model.py $(MODEL)

assets: node_modules/.package-lock.json

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

# Browser tests drive Debian's chromium (and need a Korean font for the screenshots).
browser:
	@command -v chromium >/dev/null && fc-list | grep -qi "noto sans cjk" || { \
		apt-get update -qq && apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; }

# The suites' PostgreSQL runs start a throwaway cluster with Debian's server binaries
# (initdb/pg_ctl from the postgresql package; tests/postgres.py).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# The quick benchmarks (a few minutes); figures and commands in docs/benchmarks.md.
bench: install model
	$(BIN)/python bench/token_commits.py
	$(BIN)/python bench/streaming.py
	$(BIN)/python bench/chat_history_cost.py
	$(BIN)/python bench/chat_page.py
	$(BIN)/python bench/markdown_render.py
	$(BIN)/python bench/batching.py
	$(BIN)/python bench/embedding.py

# The peers (llama_cpp.server in a venv of its own) and the team setup on PostgreSQL.
bench-serving: install model postgres
	$(BIN)/python bench/peers.py
	$(BIN)/python bench/store_throughput.py
	$(BIN)/python bench/projections_stores.py
	$(BIN)/python bench/search_stores.py
	$(BIN)/python bench/sse_clients.py
	$(BIN)/python bench/two_workers.py

# A million-event log: rebuild, event browser and time travel (tens of minutes, ~0.5 GB).
bench-1m: install model
	$(BIN)/python bench/rebuild_1m.py --data data-bench-1m
	$(BIN)/python bench/admin_pages.py --data data-bench-1m

clean:
	rm -rf $(VENV) node_modules data .pytest_cache
