# traderbot: the two commands are `make run` and `make test`; both create .venv and install on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run train backfill backtest bench test check-sync test-notebooks test-slow pytest dashboard lab status export clean-reports

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# torch is pinned to the CPU wheel on local disk; any other version downloads a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	@# compile every numba kernel once into the user's cache (~/.cache/traderbot/numba), so no first run waits for it
	$(BIN)/traderbot warmup
	@touch $(STAMP)

install: $(STAMP)

## run the daily pipeline on the embedded data with the paper broker (AS_OF=YYYY-MM-DD to pick a session)
run: install
	$(BIN)/traderbot run daily $(if $(AS_OF),-p as_of=$(AS_OF))

## walk-forward study of the forecasting models (out-of-sample report in reports/train/), registers a candidate; e.g. make train ARGS="-p models=baseline"
train: install
	$(BIN)/traderbot run train $(ARGS)

## paper-trade every session from FROM to TO through the daily pipeline into account ACCOUNT (default: backfill; time only moves forward in a ledger), e.g. make backfill FROM=2022-10-03 TO=2022-12-28
backfill: install
	$(BIN)/traderbot run daily --account $(or $(ACCOUNT),backfill) --from $(FROM) --to $(TO)

## the production replay over the sample (traderbot backtest), e.g. make backtest FROM=2010-01-04 TO=2022-12-28
backtest: install
	$(BIN)/traderbot backtest $(if $(FROM),--from $(FROM)) $(if $(TO),--to $(TO))

## everything CI checks: notebooks and package agree, notebook tests, pytest suites
test: install check-sync test-notebooks pytest

## fail when nbdev-export would change traderbot/ (a notebook was edited without exporting)
check-sync: install
	@sum() { find traderbot -name '*.py' -print0 | sort -z | xargs -0 sha1sum | sha1sum; }; \
	before=$$(sum); $(BIN)/nbdev-export; after=$$(sum); \
	if [ "$$before" != "$$after" ]; then \
	  echo "nbs/ and traderbot/ disagree: nbdev-export changed the package. Export, test and commit traderbot/."; \
	  git status --short traderbot 2>/dev/null; exit 1; fi; \
	echo "nbs/ and traderbot/ agree."

test-notebooks: install
	$(BIN)/nbdev-test --n-workers 2

## the notebook cells marked #| slow (papermill runs inside notebooks)
test-slow: install
	$(BIN)/nbdev-test --n-workers 2 --flags slow

pytest: install
	$(BIN)/python -m pytest tests

dashboard: install
	$(BIN)/traderbot dashboard

lab: install
	$(BIN)/jupyter lab nbs

status: install
	$(BIN)/traderbot status

## the one bench suite (bench/suite.py): every benchmark beside its peer in the same run, correctness gates first,
## interleaved repetitions, median and spread; writes reports/bench/bench.json and bench.png and prints the table.
## ONLY=sweep,portfolio runs some; QUICK=1 runs the small cases (checks the benches, not numbers to quote); README=1 writes the table into README.md
bench: install $(BENCH_STAMP)
	$(BIN)/python bench/suite.py $(if $(ONLY),--only $(ONLY)) $(if $(QUICK),--quick) $(if $(README),--readme)

# the bench extra (backtrader, the peer of bench/replay.py): only `make bench` installs it, never `make run` or `make test`
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

## export notebooks to traderbot/ and strip notebook metadata (do this before committing)
export: install
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean

clean-reports:
	rm -rf reports
