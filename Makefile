# Two entry points for a fresh clone: `make demo` and `make test` (lint, types, tests).
# Both create .venv with the Python on PATH and install the project into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kling-bot demo $(PHOTO)

# Six test workers on two cores: many tests spend their time waiting on other processes,
# sockets and retries, so four left a quarter of the CPU idle.
test: $(STAMP)
	$(BIN)/ruff check bot adapters tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 6

# The benchmarks also need the official SDK (the [bench] extra); about 25 minutes
# (bench/scale.py starts its own PostgreSQL: it needs the server binaries).
$(VENV)/.installed-bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $@

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/engine_throughput.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/reencode.py
	$(BIN)/python bench/scale.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache kling-demo
