# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean browser wheel

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

# A wheel in dist/ (run configs and the gene symbol table inside), built offline with the venv's setuptools.
wheel: $(STAMP)
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w dist .

lint: $(STAMP)
	$(BIN)/ruff check drugcell contest_scorer tests benchmarks

# Headless Chromium for the report page's browser test (tests/test_report.py): Debian's package,
# installed once when missing and when root; quiet. Without it that test skips, or fails under CI.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "chromium is not installed (needs root and apt-get): the report's browser test will skip, or fail under CI"

test: $(STAMP) browser
	$(BIN)/python -m pytest -n 2 -q tests

clean:
	rm -rf $(VENV) demo_out runs dist build
