# adconnect: the two commands are `make up` (start the platform) and `make test` (run every test).
# Both create or update .venv from the project's own files first (uv.lock; a plugin added under
# plugins/ joins the workspace and the lock automatically).

PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/uv/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

.DEFAULT_GOAL := help
.PHONY: help venv up test lint bench clean

help:
	@echo "make up     start adconnect (embedded PostgreSQL unless ADCONNECT_DATABASE_URL is set)"
	@echo "make test   run the whole test suite (ADCONNECT_TEST_DATABASE_URL or an embedded server)"
	@echo "make lint   ruff + mypy"
	@echo "make bench  run every benchmark under bench/"

$(UV):
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target .tools/uv "uv==$(UV_VERSION)"

venv: $(UV)
	$(UV) sync --all-packages --quiet

up: venv
	$(VENV)/bin/adconnect run

test: venv
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check framework plugins tests bench
	$(VENV)/bin/mypy framework/src

bench: venv
	@for script in bench/*.py; do [ -e "$$script" ] || continue; echo "== $$script"; $(VENV)/bin/python "$$script" || exit 1; done

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .mypy_cache
