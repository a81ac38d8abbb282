# Two commands on a fresh machine with Python 3.11+, git and make: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
INSTALL_LOG := $(VENV)/install.log
HOST ?= 127.0.0.1
PORT ?= 8000
TORCH_INDEX ?=

.PHONY: install run test fuzz lint bench screenshots clean

# The install's output goes to a log (pip's chatter would bury what `make run` prints); a failure shows its end.
# TORCH_INDEX: an index to take torch from first, e.g. https://download.pytorch.org/whl/cpu for the CPU build.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Lumen needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing Lumen into $(VENV) (log: $(INSTALL_LOG)) ..."
	@{ $(BIN)/python -m pip install --upgrade pip \
	   && { [ -z "$(TORCH_INDEX)" ] || $(BIN)/python -m pip install --index-url "$(TORCH_INDEX)" torch==2.13.0; } \
	   && $(BIN)/python -m pip install -e '.[worker,dev]'; } > $(INSTALL_LOG) 2>&1 \
	 || { tail -n 30 $(INSTALL_LOG); echo "make: the install failed; its whole log is $(INSTALL_LOG)"; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

## Embedded default: SQLite + a filesystem broker + a real worker, demo model, user and studies.
run: install
	@$(BIN)/lumen migrate
	@$(BIN)/lumen load-demo
	@$(BIN)/lumen serve --host $(HOST) --port $(PORT)

## The whole suite, on Postgres and Redis on loopback (and the embedded default in its own tests).
test: install
	$(BIN)/pytest

## Schemathesis over every operation of the API (tests/app/test_fuzz.py), as an admin and as a reader: no 5xx,
## responses that fit their schema. The suite runs a few examples per operation; this runs FUZZ_EXAMPLES each.
FUZZ_EXAMPLES ?= 30
fuzz: install
	LUMEN_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -m fuzz tests/app/test_fuzz.py -q

## Static checks: ruff, then the import contracts of docs/architecture.md (.importlinter), then the types.
lint: install
	$(BIN)/ruff check app workers models migrations tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/attribution.py

## The screenshots in docs/screenshots/ (study designer, reading room, 2x2 layout, onboarding a model), taken
## again by their browser tests (Chromium).
screenshots: install
	UPDATE_DOCS_SCREENSHOTS=1 $(BIN)/pytest -m browser tests/e2e/test_browser_designer.py \
	  tests/e2e/test_browser_layouts.py tests/e2e/test_browser_onboarding.py -q

clean:
	rm -rf $(VENV) var test-output .pytest_cache
