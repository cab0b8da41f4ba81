# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build of torch first, pinned, so nothing later pulls a CUDA build.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[test,l1000,ray]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/drugcell demo --out demo_out

lint: $(STAMP)
	$(BIN)/ruff check drugcell contest_scorer tests benchmarks

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q tests

clean:
	rm -rf $(VENV) demo_out runs
