# One command sets everything up: the virtual environment lives in .venv (git-ignored)
# and is built from uv.lock, so every machine gets the same versions.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SRC := cards worker producers stripe_emulator harness celeryconfig.py bench tests

.PHONY: venv run run-rabbitmq test unit integration chaos smoke-stripe lint typecheck format bench bench-live bench-p1 bench-p2 bench-p3 bench-p4 bench-p5 bench-p6 bench-replication bench-gateway bench-gateway-matrix fleet-simulation chaos-rabbitmq bench-brokers test-rabbitmq clean

$(STAMP): pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"
	$(BIN)/uv sync --frozen --inexact --all-extras --quiet
	touch $(STAMP)

venv: $(STAMP)

## run: start a broker, the Stripe emulator and a worker; enqueue sample jobs; print envelopes.
run: venv
	$(BIN)/python -m harness.demo

## run-rabbitmq: the same demo with a private RabbitMQ node (quorum queues) as the broker.
run-rabbitmq: venv
	$(BIN)/python -m harness.demo --broker rabbitmq

## test: lint, type-check and the whole test suite (what CI runs), on two xdist workers:
## most tests wait on subprocesses; each test file runs whole on one worker (its
## module-scoped processes start once; the chaos scenarios run one at a time).
test: venv lint typecheck
	$(BIN)/pytest -n 2 --dist loadfile

## test-rabbitmq: only the RabbitMQ broker's tests (part of `make test`): integration, the
## broker benchmark and chaos R1, R2, R5 at CI size, all on one private RabbitMQ node.
test-rabbitmq: venv
	$(BIN)/pytest -m rabbitmq

unit: venv
	$(BIN)/pytest tests/unit tests/emulator

integration: venv
	$(BIN)/pytest tests/integration

## chaos: the chaos scenarios R1-R5 at full size; writes their figures to RELIABILITY.md.
chaos: venv
	$(BIN)/python -m tests.chaos.run --full

## chaos-rabbitmq: R1, R2 and R5 at full size on a private RabbitMQ node; writes RELIABILITY.md.
chaos-rabbitmq: venv
	$(BIN)/python -m tests.chaos.run --full --broker rabbitmq

## smoke-stripe: the whole pipeline against Stripe test mode (needs STRIPE_API_KEY=sk_test_…;
## skips without one, refuses a live key).
smoke-stripe: venv
	@$(BIN)/python -m harness.smoke_stripe

lint: venv
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)

typecheck: venv
	$(BIN)/mypy cards worker producers stripe_emulator harness bench celeryconfig.py

format: venv
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

## bench: end-to-end throughput, ours against a plain Celery task (see BENCHMARKS.md).
bench: venv
	$(BIN)/python -m bench.e2e

## bench-live: live jobs at 0 and 300 ms Stripe latency, the plain worker against plain Celery.
bench-live: venv
	$(BIN)/python -m bench.live

## bench-p1 … bench-p6: the migration benchmarks of BENCHMARKS.md, each at full size.
bench-p1: venv
	$(BIN)/python -m bench.p1

bench-p2: venv
	$(BIN)/python -m bench.p2

bench-p3: venv
	$(BIN)/python -m bench.p3_budget

bench-p4: venv
	$(BIN)/python -m bench.p4_live_latency

bench-p5: venv
	$(BIN)/python -m bench.p5_file

## bench-p6: a 1,000,000-row migration through the batch-api engine (Stripe's Batch Jobs API).
bench-p6: venv
	$(BIN)/python -m bench.p6_batch

## bench-brokers: E2E and P1 on RabbitMQ (quorum queues) against Redis, in one run.
bench-brokers: venv
	$(BIN)/python -m bench.brokers

## bench-replication: jobs a Sentinel failover loses to async replication (LPUSH vs LPUSH+WAIT).
bench-replication: venv
	$(BIN)/python -m bench.replication_loss

## bench-gateway: the HTTP gateway: push against poll waits, CPU per 202, --workers 1 vs 2, overload,
## and alone (a stand-in worker) against the gateway before push waits (git archive of its commit).
bench-gateway: venv
	$(BIN)/python -m bench.gateway

## bench-gateway-matrix: the gateway before and after at concurrency 10/50/200/500 and
## Stripe 0/200 ms, enqueue and wait (jobs/s, p50/p95/p99, CPU, RSS, statuses).
bench-gateway-matrix: venv
	$(BIN)/python -m bench.gateway_matrix

## fleet-simulation: a 100-pod fleet under a burst (queue, scale-up lag, Stripe budget);
## redraws docs/fleet-simulation.png (docs/scaling.md).
fleet-simulation: venv
	$(BIN)/python -m bench.fleet_simulation --out docs/fleet-simulation.png

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
