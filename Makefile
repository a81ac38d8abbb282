# Two commands on a fresh machine with Python 3.11+, git and make: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Lumen needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Embedded default: SQLite + a filesystem broker + a real worker, demo model, user and studies.
run: install
	$(BIN)/lumen migrate
	$(BIN)/lumen load-demo
	$(BIN)/lumen serve

## The whole suite, on Postgres and Redis on loopback (and the embedded default in its own tests).
test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check app workers models migrations tests bench

bench: install
	$(BIN)/python bench/attribution.py

clean:
	rm -rf $(VENV) var test-output .pytest_cache
