# Sentinel's two commands: `make run` and `make test`. Everything else is a step of theirs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000
# The mock upstream's port (`make run UPSTREAM_PORT=8180`); the demo route and webhook channel
# point at it unless DOWNSTREAM_URL says otherwise. Only `run` and `seed` see these: the tests
# keep the settings' own defaults.
UPSTREAM_PORT ?= 8080
run seed: export UPSTREAM_PORT := $(UPSTREAM_PORT)
run seed: export DOWNSTREAM_URL ?= http://127.0.0.1:$(UPSTREAM_PORT)
# Fleet-wide incidents (a flooding address, a failing upstream) become events of the demo tenant
# whose demo rule notifies the mock upstream's /sink (seed_demo_rules).
run: export INSIGHT_EVENTS_TENANT ?= globex
# In production mode (DATABASE_URL or REDIS_URL set) settings demand SECRET_KEY; locally the
# one kept in var/secret_key is used when none is given.
WITH_KEY = SECRET_KEY="$${SECRET_KEY:-$$(cat var/secret_key)}"

.PHONY: install protos train ports run test lint format migrate seed check clean bench-tools browser

$(BIN)/python:
	@echo "==> Creating the virtualenv in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip prints a line per package (no --quiet): a first install takes a minute or two, and a
# silent screen for that long looks like a hang.
$(STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	@echo "==> Installing Python dependencies into $(VENV) (the first time takes a minute or two)"
	$(BIN)/python -m pip install --progress-bar off -r requirements-dev.txt
	touch $(STAMP)
	@echo "==> Dependencies installed"

# var/ holds the embedded database (webhook secrets, sessions), the key and the first-run
# credentials: readable by its owner only.
var/secret_key:
	mkdir -p var
	chmod 700 var
	umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(50))" > $@

# Front-end packages from npm (package.json, package-lock.json) into node_modules, which Django's
# static files read from (settings.STATICFILES_DIRS): nothing is copied into the repository.
# npm ci writes node_modules/.package-lock.json, so this reruns only when the manifest changes.
NODE_STAMP := node_modules/.package-lock.json
$(NODE_STAMP): package.json package-lock.json
	@echo "==> Installing front-end packages (npm ci)"
	npm ci --no-audit --no-fund

# The fraud brain's gRPC stubs (SPEC 6), generated from the proto next to them and not committed.
PROTO_STUBS := fraud/protos/fraud_pb2.py fraud/protos/fraud_pb2.pyi fraud/protos/fraud_pb2_grpc.py
$(PROTO_STUBS) &: fraud/protos/fraud.proto $(STAMP)
	@echo "==> Generating the fraud brain's gRPC stubs"
	$(BIN)/python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. fraud/protos/fraud.proto

## protos: the fraud brain's gRPC stubs (part of install)
protos: $(PROTO_STUBS)

## train: (re)train the fraud brain's model into var/fraud-model (FRAUD_MODEL_DIR), print its
# held-out ROC AUC and precision/recall at the review and decline thresholds, and record them in
# docs/benchmarks.md. A running brain keeps its model until restarted; `run_brain` trains one
# itself when the folder is empty, so `make run` needs no `make train` first.
train: install
	$(WITH_KEY) $(BIN)/python manage.py train_brain --record

## install: virtualenv in .venv with every dependency, the gRPC stubs and the front-end packages
install: $(STAMP) var/secret_key $(NODE_STAMP) $(PROTO_STUBS)
	@chmod 700 var

migrate: install
	@echo "==> Migrating the database"
	$(WITH_KEY) $(BIN)/python manage.py migrate --noinput

# Each app seeds its own demo objects: tenants, staff user and a demo key; the default route; a
# webhook channel to the mock upstream's /sink and a rule that notifies it; a monitor of its /health.
seed: migrate
	@echo "==> Seeding demo data"
	$(WITH_KEY) $(BIN)/python manage.py seed_demo
	$(WITH_KEY) $(BIN)/python manage.py seed_demo_routes --follow-downstream
	$(WITH_KEY) $(BIN)/python manage.py seed_demo_rules --follow-downstream
	$(WITH_KEY) $(BIN)/python manage.py seed_demo_monitors --follow-downstream

# Before migrating or starting anything: a second `make run`, or another server on a port, is
# stopped here with the port's name rather than by a bind error scrolled away in honcho's output.
ports: install
	@$(WITH_KEY) $(BIN)/python manage.py await_ready --ports-free --port $(PORT) --upstream-port $(UPSTREAM_PORT)

## run: install, migrate, seed demo data, then every Procfile process together
# await_ready runs beside honcho and prints the URLs and the first-run credentials again once
# /health answers: honcho's output would scroll a banner printed before it away at once. It
# watches honcho's pid (the shell's, which exec hands to honcho) and prints nothing if honcho ends.
run: ports seed
	$(WITH_KEY) $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@echo "==> Starting every process of the Procfile (Ctrl-C stops them all); the URLs follow once /health answers"
	$(WITH_KEY) PATH="$(CURDIR)/$(BIN):$$PATH" sh -c '$(BIN)/python manage.py await_ready --port $(PORT) \
		--upstream-port $(UPSTREAM_PORT) --while-pid $$$$ & exec $(BIN)/honcho start -f Procfile -p $(PORT)'

## test: install, lint, and the whole suite in two pytest-xdist workers (`make test TEST_WORKERS=0`
# runs it in one process). Most end-to-end tests wait on the processes they start, so two workers
# share the 2 cores well; each has its own var folder (tests/support/settings.py).
TEST_WORKERS ?= 2
# worksteal: each worker starts on a contiguous half of the suite (a module's tests stay together,
# so its module-scoped servers start once) and takes tests from the other's queue when it runs
# out, so a long test does not leave one worker idle at the end.
# PYTHONDONTWRITEBYTECODE emptied: where the environment sets it (CI images often do), every
# worker and every process a test starts (web, worker, brain: hundreds) compiled the project from
# source, and pytest re-parsed and re-rewrote every test module in each worker.
test: export PYTHONDONTWRITEBYTECODE :=
test: install lint browser
	$(WITH_KEY) $(BIN)/python manage.py spectacular --fail-on-warn --validate --file /dev/null
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(if $(filter 0,$(TEST_WORKERS)),,--dist worksteal)

# Type checks (CONVENTIONS 10): mypy --strict (with the Django and DRF plugins) on the hot paths,
# the ground floor and every app's services and selectors.
TYPED_STRICT := gateway/engine rules/dsl core $(wildcard */services.py */services */selectors.py) rules/notifiers.py \
	monitors/engine monitors/checks.py monitors/scheduler.py monitors/alerts.py monitors/maintenance.py monitors/status.py \
	fraud/engine fraud/brain fraud/runtime.py fraud/breaker.py fraud/chaos.py fraud/health.py gateway/metrics.py bench/gateway bench/gateway_ab.py \
	bench/gateway_instructions.py bench/common/callgrind.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict --exclude '/tests/' $(TYPED_STRICT)

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

check: install
	$(WITH_KEY) $(BIN)/python manage.py check --deploy --fail-level ERROR

## bench-tools: wrk, nginx-light and valgrind from Debian, py-spy into .venv (for `python -m bench.gateway`;
# valgrind's callgrind for `python -m bench.gateway_instructions`)
# Debian's packages only when a tool is missing (apt-get update only if the first try fails);
# py-spy is a dev tool for the benchmark's profile, not a requirement of Sentinel.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
APT  := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
BENCH_DEBS := wrk nginx-light valgrind
bench-tools: install
	@if command -v wrk >/dev/null && command -v callgrind_control >/dev/null \
		&& { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null; then \
		echo "==> wrk, nginx and valgrind are installed"; \
	else \
		echo "==> Installing $(BENCH_DEBS) with apt-get"; \
		$(APT) install -y --no-install-recommends $(BENCH_DEBS) \
			|| { $(APT) update && $(APT) install -y --no-install-recommends $(BENCH_DEBS); }; \
	fi
	@echo "==> Installing py-spy into $(VENV)"
	$(BIN)/python -m pip install --quiet py-spy==0.4.3

## browser: Debian's chromium for the browser tests (Playwright drives it; it downloads no browser)
# Installed with apt-get when missing and running as root; otherwise the browser tests are skipped
# with the reason (and fail with CI=true).
browser:
	@if [ -x /usr/bin/chromium ]; then \
		echo "==> chromium is installed"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "==> Installing chromium with apt-get"; \
		$(APT) install -y --no-install-recommends chromium \
			|| { $(APT) update && $(APT) install -y --no-install-recommends chromium; } \
			|| echo "==> chromium could not be installed: the browser tests will say so"; \
	else \
		echo "==> chromium is missing and this is not root: the browser tests will be skipped"; \
	fi

clean:
	rm -rf $(VENV) var/celery var/static var/test.sqlite3*
