# Two commands on a fresh machine: `make serve` and `make test`. Both create .venv with the machine's python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: serve test contract fuzz bench bench-contract clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed  ## serve the mock on 127.0.0.1:8080 (extra flags: make serve ARGS="--seed 7")
	$(BIN)/ocp-mock serve $(ARGS)

browser:  ## Debian's Chromium for tests/test_browser.py (no-op when /usr/bin/chromium exists)
	bash scripts/install-browser.sh

test: $(VENV)/.installed-test browser  ## run the whole test suite (installs Chromium for the browser tests)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

contract: $(VENV)/.installed-test  ## check a server against the contract: make contract URL=http://host:port
	$(BIN)/ocp-contract run --base-url $(or $(URL),http://127.0.0.1:8080) $(ARGS)

fuzz: $(VENV)/.installed-test  ## long schemathesis run against `ocp-mock serve` over HTTP: N examples per operation
	OCP_FUZZ_EXAMPLES=$(or $(N),700) $(BIN)/python -m pytest tests/test_fuzz.py -k over_http -s -q -p no:randomly

bench: $(VENV)/.installed  ## mock vs Prism vs bare Flask, see bench/RESULTS.md (ARGS="--duration 300": 5-minute soak)
	$(BIN)/python bench/run.py $(ARGS)

bench-contract: $(VENV)/.installed-test  ## ocp-contract vs plain `st run` on the mock, cases/s (ARGS="--rounds 5 --max-examples 100")
	$(BIN)/python bench/contract.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis reports
