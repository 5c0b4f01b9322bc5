# fieldrig: `make demo` runs the simulated lab end to end; `make test` runs every test.
# Both set themselves up from a fresh clone (Debian, Python 3.11+).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-deps test lint docs bench system-deps venv clean

demo: demo-deps $(STAMP)
	$(BIN)/fieldrig-demo $(DEMO_ARGS)

# The demo also runs without mosquitto/influxd (bench and gateway only, and it says so).
demo-deps:
	@FIELDRIG_DEPS_OPTIONAL=1 sh tools/install_system_deps.sh

test: system-deps $(STAMP)
	@rm -rf .tox/reports
	@$(BIN)/tox $(TOX_ARGS); status=$$?; $(BIN)/python tools/test_summary.py .tox/reports; exit $$status

lint: $(STAMP)
	$(BIN)/tox -e lint

docs: $(STAMP)
	$(BIN)/python -m pip install -q -r requirements/docs.txt
	$(BIN)/mkdocs build --strict

bench: system-deps $(STAMP)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

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
