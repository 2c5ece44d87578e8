# Two entry points a newcomer needs: `make demo` and `make test`.
# Both create .venv and install the project with everything it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck bench bench-remote local-aws-up local-aws-down clean

$(STAMP): pyproject.toml package-lock.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	npm ci --no-audit --no-fund --silent
	touch $(STAMP)

install: $(STAMP)

# The demo workload has one failing command on purpose: exit code 1 is expected.
demo: $(STAMP)
	$(BIN)/taskfleet run examples/demo.txt --workers 4 --output demo-results.jsonl || [ $$? -eq 1 ]
	@echo "first results (all of them are in demo-results.jsonl):"
	@head -n 3 demo-results.jsonl

lint: $(STAMP)
	$(BIN)/ruff check src cdk scripts tests bench
	$(BIN)/ruff format --check src cdk scripts tests bench

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy cdk scripts tests bench

test: lint typecheck
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/local_path.py --json bench/results/local_path.json

# The remote path through the emulator: stands the stack up and tears it down.
bench-remote: $(STAMP)
	$(BIN)/python -m bench.remote_path --json bench/results/remote_path.json

# The AWS stack on this machine, with no account: moto_server on localhost,
# then `cdk bootstrap` and `cdk deploy --method=direct` against it.
local-aws-up: $(STAMP)
	$(BIN)/python scripts/local_aws.py up

local-aws-down: $(STAMP)
	$(BIN)/python scripts/local_aws.py down

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
