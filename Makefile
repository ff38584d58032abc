# falco-router developer commands. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench generate clean proto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## run: start the router on the embedded default config and route the sample alerts through it
run: $(STAMP)
	$(BIN)/python examples/quickstart.py

## test: run the whole test suite (starts its own Tansu broker, Slack and webhook servers on 127.0.0.1)
test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check router tests helm docs bench scripts
	$(BIN)/ruff format --check router tests helm docs bench scripts
	$(BIN)/mypy router bench
	$(BIN)/hadolint Dockerfile

## generate: rewrite the files generated from the config model and the chart (tests fail while they are stale)
generate: $(STAMP)
	$(BIN)/python docs/gen_settings.py
	$(BIN)/python docs/gen_output_tables.py
	$(BIN)/python docs/gen_telemetry.py
	$(BIN)/python helm/gen_schema.py
	$(BIN)/python helm/gen_falco_values.py

## proto: regenerate router/proto_gen from proto/falco/*.proto (commit the result)
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

## bench: run every benchmark in bench/ and rewrite bench/results/latest.json and docs/benchmarks.md
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
