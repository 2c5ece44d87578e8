# Two entry points a newcomer needs: `make demo` and `make test`.
# Both create .venv. The demo installs the package alone (its run needs nothing
# else: seconds, not minutes); everything else installs it with its dev tools,
# the CDK libraries and the CDK CLI. Two stamps, so that `make test` after
# `make demo` installs the rest, and `make demo` after `make test` installs nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGE_STAMP := $(VENV)/.installed-package
STAMP := $(VENV)/.installed-dev
# make test-fast's tests in a process a core (two to four), each taking a test
# file at a time. PARALLEL= runs them in one. `make test TEST_PARALLEL='...'` runs
# the whole suite so too (about 15 minutes instead of 26 on 2 cores), but not by
# default: under that load, moto_server's unlocked conditional writes can let two
# workers claim one bundle (docs/testing.md).
PARALLEL ?= --numprocesses=auto --maxprocesses=4 --dist=loadfile

.PHONY: install demo test test-fast mutation lint typecheck system-packages bench bench-remote local-aws-up local-aws-down worker-constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# --no-compile: the demo's run compiles the modules it imports, not all of
# botocore's (15 MB less, and seconds).
$(PACKAGE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --no-compile --disable-pip-version-check -e .
	touch $@

# Everything: the package with its dev extras (CDK libraries, plotting, test
# and lint tools) and the CDK CLI. The package's stamp is touched too: it is in.
$(STAMP): pyproject.toml package-lock.json | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install --quiet --upgrade pip
	$(VENV)/checkov/bin/pip install --quiet --group checkov
	ln -sf ../checkov/bin/checkov $(BIN)/checkov
	npm ci --no-audit --no-fund --silent
	touch $(PACKAGE_STAMP) $@

install: $(STAMP)

# The demo workload has one failing command on purpose: exit code 1 is expected.
demo: $(PACKAGE_STAMP)
	$(BIN)/taskfleet run examples/demo.txt --workers 4 --output demo-results.jsonl || [ $$? -eq 1 ]
	@echo "first results (all of them are in demo-results.jsonl):"
	@head -n 3 demo-results.jsonl

lint: $(STAMP)
	$(BIN)/ruff check src cdk scripts tests bench
	$(BIN)/ruff format --check src cdk scripts tests bench

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy cdk scripts tests bench

# Debian packages some tests use: nftables for the task firewall's test, in a
# network namespace; Chromium and its driver for the dashboard's browser tests;
# debootstrap for the boot's test, in a Debian root file system.
# Installed when missing and root (as in CI); elsewhere those tests skip.
# command:package pairs the tests and the bench use (GNU parallel: a bench peer).
SYSTEM_PACKAGES := nft:nftables parallel:parallel chromium:chromium chromedriver:chromium-driver \
  debootstrap:debootstrap
system-packages:
	@for entry in $(SYSTEM_PACKAGES); do \
	  command -v $${entry%%:*} >/dev/null || PATH="$$PATH:/usr/sbin:/sbin" command -v $${entry%%:*} >/dev/null || { \
	    if [ "$$(id -u)" = 0 ]; then \
	      apt-get update -qq && apt-get install -y -qq $${entry##*:} >/dev/null; \
	    else echo "not root: $${entry##*:} not installed, its tests skip"; fi; }; \
	done

# The slowest tests are listed, so a run that grows toward CI's limit shows where.
test: lint typecheck system-packages
	$(BIN)/pytest --durations=25 $(TEST_PARALLEL)

# Bytecode compiled first, as a pip install leaves it: an editable install where
# PYTHONDONTWRITEBYTECODE is set would compile every module in every process.
bench: $(STAMP) system-packages
	$(BIN)/python -m compileall -q src >/dev/null
	$(BIN)/python bench/local_path.py --json bench/results/local_path.json
	$(BIN)/python bench/command_costs.py

# The remote path through the emulator: stands the stack up and tears it down
# (each bench its own stack). Provisioning: BEFORE=DIR (an earlier checkout with
# its .venv, or an earlier run's JSON) adds a before column.
bench-remote: $(STAMP)
	$(BIN)/python -m bench.remote_path --json bench/results/remote_path.json
	$(BIN)/python -m bench.provisioning --json bench/results/provisioning.json $(if $(BEFORE),--before $(BEFORE))
	$(BIN)/python -m bench.fleet_requests --json bench/results/fleet_requests.json
	$(BIN)/python -m bench.files_path --json bench/results/files_path.json

# The AWS stack on this machine, with no account: moto_server on localhost,
# then `cdk bootstrap` and `cdk deploy --method=direct` against it.
local-aws-up: $(STAMP)
	$(BIN)/python -m scripts.local_aws up $(ARGS)

local-aws-down: $(STAMP)
	$(BIN)/python -m scripts.local_aws down $(ARGS)

# Unit and in-process tests only: no end-to-end processes, emulator, CDK
# synthesis or generated volume (under a minute). `make test` runs everything.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not e2e and not volume and not emulator and not cdk" $(PARALLEL)

# Bugs planted one at a time in the modules where a bug loses or duplicates work
# ([tool.mutmut] in pyproject.toml), each run against the fast tests meant to
# catch it. Slow, so not part of `make test`; `mutmut browse` shows survivors.
mutation: $(STAMP)
	$(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

# The versions a fleet instance installs: run after changing dependencies.
worker-constraints: $(STAMP)
	$(BIN)/python scripts/pin_worker.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
