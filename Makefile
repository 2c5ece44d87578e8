# Two entry points a newcomer needs: `make demo` and `make test`.
# Both create .venv and install the project with everything it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The demo workload has one failing command on purpose: exit code 1 is expected.
demo: $(STAMP)
	$(BIN)/taskfleet run examples/demo.txt --workers 4 --output demo-results.jsonl || [ $$? -eq 1 ]
	@echo "first results (all of them are in demo-results.jsonl):"
	@head -n 3 demo-results.jsonl

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy tests bench

test: lint typecheck
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/local_path.py --json bench/results/local_path.json

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
