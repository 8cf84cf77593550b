# Sentinel's two commands: `make run` and `make test`. Everything else is a step of theirs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8000
# In production mode (DATABASE_URL or REDIS_URL set) settings demand SECRET_KEY; locally the
# one kept in var/secret_key is used when none is given.
WITH_KEY = SECRET_KEY="$${SECRET_KEY:-$$(cat var/secret_key)}"

.PHONY: install run test lint format migrate seed check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

var/secret_key:
	mkdir -p var
	umask 077 && $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(50))" > $@

## install: virtualenv in .venv with every dependency
install: $(STAMP) var/secret_key

migrate: install
	$(WITH_KEY) $(BIN)/python manage.py migrate --noinput

seed: migrate
	$(WITH_KEY) $(BIN)/python manage.py seed_demo

## run: install, migrate, seed demo data, then every Procfile process together
run: seed
	$(WITH_KEY) $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@echo ""
	@echo "Sentinel is starting (Ctrl-C stops every process):"
	@echo "  home       http://127.0.0.1:$(PORT)/"
	@echo "  API docs   http://127.0.0.1:$(PORT)/docs"
	@echo "  admin      http://127.0.0.1:$(PORT)/admin/"
	@echo "  health     http://127.0.0.1:$(PORT)/health"
	@echo "  metrics    http://127.0.0.1:$(PORT)/metrics"
	@echo "  upstream   http://127.0.0.1:$${UPSTREAM_PORT:-8080}/ (mock backend)"
	@echo ""
	$(WITH_KEY) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile -p $(PORT)

## test: install, lint, and the whole suite
test: install lint
	$(WITH_KEY) $(BIN)/python manage.py spectacular --fail-on-warn --validate --file /dev/null
	$(BIN)/python -m pytest

# Type checks (CONVENTIONS 10): strict on the hot paths, which import no Django; the plugins'
# checks on the services and selectors.
TYPED_STRICT := gateway/engine rules/dsl
TYPED := $(wildcard */services.py */selectors.py) rules/notifiers.py sentinel_site/errors.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict $(TYPED_STRICT)
	$(BIN)/mypy $(TYPED)

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

check: install
	$(WITH_KEY) $(BIN)/python manage.py check --deploy --fail-level ERROR

clean:
	rm -rf $(VENV) var/celery var/static var/test.sqlite3*
