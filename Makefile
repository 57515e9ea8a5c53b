# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install test-deps lint bench serve clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/commcredits demo

serve: install
	$(BIN)/commcredits serve

# Test dependencies that are not Python packages: a PostgreSQL server (the
# tests start a throwaway cluster of their own on 127.0.0.1).
test-deps:
	@bash scripts/install-test-deps

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy

test: install test-deps lint
	$(BIN)/pytest

bench: install test-deps
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) data build *.egg-info
