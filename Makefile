# fieldrig: `make demo` runs the simulated lab end to end; `make test` runs every test.
# Both set themselves up from a fresh clone (Debian, Python 3.11+).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint system-deps venv clean

demo: system-deps $(STAMP)
	$(BIN)/fieldrig-demo $(DEMO_ARGS)

test: system-deps $(STAMP)
	@rm -rf .tox/reports
	@$(BIN)/tox $(TOX_ARGS); status=$$?; $(BIN)/python tools/test_summary.py .tox/reports; exit $$status

lint: $(STAMP)
	$(BIN)/tox -e lint

system-deps:
	@sh tools/install_system_deps.sh

venv: $(STAMP)

$(STAMP): requirements/dev.txt edge/pyproject.toml cloud/pyproject.toml hil_tests/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/dev.txt "tox>=4.11"
	touch $(STAMP)

clean:
	rm -rf $(VENV) .tox firmware/typings
