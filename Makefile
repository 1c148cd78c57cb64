# The README's commands. `make run` runs the benchmark, `make test` the tests; both build
# .venv first when it is missing or older than pyproject.toml.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= quick
PORT ?= 5000
DASHBOARD_PORT ?= 8080
SERVE_PORT ?= 5001
# Test processes side by side (pytest-xdist): most tests wait on process starts and servers.
TEST_WORKERS ?= 2

# The contract's tracking defaults (INTERFACE.md): `mlflow run` creates its run from these
# before any project code runs. Bounded HTTP retries make an unreachable server fail in
# seconds instead of minutes.
# FMB_MLRUNS_DIR moves the tracking store with the pipeline's other stores, as without make.
MLRUNS := $(or $(FMB_MLRUNS_DIR),$(CURDIR)/mlruns)
export MLFLOW_TRACKING_URI ?= sqlite:///$(MLRUNS)/mlflow.db
export MLFLOW_EXPERIMENT_NAME ?= fashion-mnist
export MLFLOW_HTTP_REQUEST_MAX_RETRIES ?= 2
export MLFLOW_HTTP_REQUEST_TIMEOUT ?= 20
export MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR ?= 1

.PHONY: setup run test lint format bench ui server serve dashboard mlproject screenshots clean-venv

setup: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned to the release this machine holds on disk (a CUDA build that also runs on CPU)
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

run: setup
	@mkdir -p $(MLRUNS)
	$(BIN)/python -m pipeline main --profile $(PROFILE)

# Ray is an extra that `make run` never pulls; the tests need it (tests/test_scale.py).
$(BIN)/.ray: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev,ray]"
	touch $@

test: setup $(BIN)/.ray
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=15 $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python bench/bench_train.py

ui: setup
	@echo "MLflow UI: http://127.0.0.1:$(PORT)/#/experiments?workflowType=machine_learning  (open 'fashion-mnist')"
	@# MLflow's job runner off, as in tools/server.py: eight idle processes this project never uses
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=$${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false} \
	  $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --port $(PORT) --host 127.0.0.1

# A hardened server (tools/server.py): 127.0.0.1 only, Host headers checked; AUTH=1 adds
# MLflow's basic auth (needs MLFLOW_AUTH_ADMIN_PASSWORD in the environment).
server: setup
	$(BIN)/python tools/server.py --port $(PORT) $(if $(AUTH),--auth,)

# MLflow's scoring server for a registered model (default: the champion of `make run`):
# POST {"inputs": float32 images (N, 1, 28, 28), raw pixels 0..255} to /invocations for
# (N, 10) class probabilities. The server starts uvicorn by name: .venv/bin goes on PATH.
MODEL ?= models:/fashion-mnist-classifier@champion
serve: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow models serve -m "$(MODEL)" --env-manager local \
	  --host 127.0.0.1 --port $(SERVE_PORT)

# optuna-dashboard is an extra: `make run` never needs it.
$(BIN)/.dashboard: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev,dashboard]"
	touch $@

# The studies' storage: the pipeline's default (FMB_MLRUNS_DIR moves it, as it moves the
# pipeline's), or any other with STORAGE=<url or journal file>, as `main` and tune print it.
STORAGE ?= sqlite:///$(MLRUNS)/optuna.db

dashboard: $(BIN)/.dashboard
	@echo "optuna-dashboard: http://127.0.0.1:$(DASHBOARD_PORT) (a study: /dashboard/studies/<id>, as tune prints)"
	$(BIN)/optuna-dashboard $(STORAGE) --host 127.0.0.1 --port $(DASHBOARD_PORT)

# PNGs of the MLflow UI on this store (after `make run`), for the README; needs Debian's
# chromium (`apt-get install chromium`), so it stays outside `make test`.
screenshots: setup
	$(BIN)/python tools/screenshots.py --store $(MLRUNS)/mlflow.db --out $(CURDIR)/docs/screenshots

# MLproject is generated from the settings in pipeline/config.py (tests fail when it differs).
mlproject: setup
	$(BIN)/python -m pipeline.mlproject > MLproject.tmp && mv MLproject.tmp MLproject

clean-venv:
	rm -rf $(VENV)
