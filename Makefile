# The two commands a fresh machine needs: `make demo` (the main job) and `make test`.
# Both install what they need first: Python packages into .venv, system packages
# (Prometheus) with apt-get where we are allowed to.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup system demo serve test lint typecheck unit bench bench-eval bench-sdk bench-scheduler bench-decisions clean

$(BIN)/rollout: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

system:
	scripts/install-system-deps

setup: system $(BIN)/rollout

demo: setup
	$(BIN)/rollout demo

lint: $(BIN)/rollout
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(BIN)/rollout
	$(BIN)/mypy

unit: $(BIN)/rollout
	$(BIN)/pytest tests/unit -q

# Two workers, a test file each at a time (module fixtures such as a Prometheus stay
# within one worker); --durations names the slow ones in CI's log.
test: setup lint typecheck
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=15 --cov --cov-report=term:skip-covered

bench: setup
	$(BIN)/python -m tests.benchmarks.detection_latency

# Evaluation speed (in-process vs peer SDKs, HTTP vs a bare ASGI app); about 5 minutes.
# Needs wrk and the peer SDKs (the `bench` extra), installed here, not for `make test`.
bench-eval: setup
	scripts/install-system-deps --bench
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m tests.benchmarks.evaluation --write-docs

bench-sdk: setup
	$(BIN)/python -m tests.benchmarks.sdk_evaluation --write-docs

# Scheduler: 1,000 rollouts x 3 gates on one replica against a real Prometheus, with and
# without 10 % of them hanging; about 11 minutes.
bench-scheduler: setup
	$(BIN)/python -m tests.benchmarks.scheduler --write-docs

# Decision quality: seeded simulated traffic through the real decide(), 200 runs per cell
# (healthy and regressed canaries at 1, 5 and 25 %), threshold plan beside compare plan.
bench-decisions: $(BIN)/rollout
	$(BIN)/python -m tests.benchmarks.decision_quality --write-docs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage *.egg-info
