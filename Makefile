# The one way in: `make run` and `make test` set everything up on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-packages run test lint format proto fuzz soak bench bench-change bench-floor bench-runtime deploy-check scale-test clean

install: $(STAMP)

# Chromium, HAProxy and kubectl from Debian's packages, for the tests that drive them (see .ci/debian-packages).
system-packages:
	@bash .ci/debian-packages

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: install
	$(BIN)/python app.py

# Coverage of the module's own code; the run fails below the floor in pyproject.toml ([tool.coverage.report]).
test: install system-packages
	$(BIN)/python -m pytest --cov --cov-report=term:skip-covered

# schemathesis on /openapi.json and hypothesis on every RPC, with many more examples than `make test` draws.
FUZZ_EXAMPLES ?= 300
fuzz: install
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q tests/routes/test_fuzz_openapi.py tests/grpc_api/test_fuzz.py

# Slow fault runs under a gRPC load, failing if a call failed or a record was lost or doubled: PostgreSQL refused,
# then blackholed (needs PostgreSQL: a database of its own is made beside SOAK_DATABASE_URL's); the module
# SIGKILLed and restarted on its journal; the module SIGTERMed.
SOAK_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
soak: install
	BENCH_DATABASE_URL=$(SOAK_DATABASE_URL) $(BIN)/python bench/database_outage.py --before 5 --refused 5 --blackhole 5 --after 5
	$(BIN)/python bench/crash_soak.py

# The generated modules are committed (tests/proto checks they match the .proto); this remakes them.
proto: install
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. proto/lambda_action.proto

# Prints measurements, not pass or fail. `bench`: the module side by side with direct boto3, the minimal gateway
# and the earlier module (BENCH_DATABASE_URL=postgresql://... logs to PostgreSQL), results in bench/results/;
# then the embedded runtime's own rows, as `bench-runtime` prints them.
bench: install
	$(BIN)/python bench/gateway_bench.py
	$(BIN)/python bench/local_lambda_bench.py

# What a change is worth: this checkout's module against BASE's (HEAD, so the uncommitted change), side by side
# against one runtime, rounds alternated, in one run (BENCH_DATABASE_URL as for `bench`); CHANGE_ARGS adds options
# (--transport rest, --function sleep, --rounds N, --seconds S, --callers N).
BASE ?= HEAD
bench-change: install
	$(BIN)/python bench/change_compare.py --base $(BASE) $(CHANGE_ARGS)

# How far the record path alone sits below the minimal gateway: the minimal gateway, the same gateway with only the
# module's record path (bench/gateway_compare/record_floor.py) and the module, side by side over gRPC
# (BENCH_DATABASE_URL as for `bench`); FLOOR_ARGS adds options (--no-fdatasync-floor, --rounds N, --seconds S).
bench-floor: install
	$(BIN)/python bench/floor_compare.py $(FLOOR_ARGS)

# How fast the embedded Lambda runtime alone answers through boto3: warm, after an edit, after a start, and the
# same handler through python-lambda-local and through a bare subprocess, a process per call.
bench-runtime: install
	$(BIN)/python bench/local_lambda_bench.py

# The Kubernetes overlays rendered (kubectl kustomize) and validated strictly; the Dockerfile linted (hadolint).
deploy-check: install system-packages
	$(BIN)/python deploy/check_manifests.py

# Three instances behind HAProxy sharing one PostgreSQL database of the run's own (made beside SCALE_DATABASE_URL's),
# loaded over REST and gRPC, one stopped with SIGTERM midway: fails if a call is lost or run twice, or a record is
# missing. Also prints calls/s with three instances and with one.
SCALE_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
scale-test: install system-packages
	$(BIN)/python bench/scale_out.py --database-url $(SCALE_DATABASE_URL)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) data logs .pytest_cache .ruff_cache
