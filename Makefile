# make run   : fresh virtualenv + the analyze job on the bundled example data, inspect, report
# make test  : fresh virtualenv + the test suite (what .ci/run calls)
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
OUT    ?= out/artifacts

.PHONY: setup run test test-slow clean browser

setup: $(VENV)/.installed

# Debian's Chromium: the report's tests open it in a real browser (as root, from Debian's
# registry; elsewhere install the `chromium` package yourself).
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium (the report's browser tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

$(VENV)/.installed: requirements.lock requirements-backends.lock setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock -r requirements-backends.lock
	$(PY) -m pip install -qq --no-deps -e .  # -qq: setuptools' notice about editable installs
	touch $@

run: setup
	$(VENV)/bin/prepro analyze --spec examples/spec.yaml --input 'examples/data/*.csv' --format csv --output $(OUT)
	$(VENV)/bin/prepro inspect $(OUT)
	$(VENV)/bin/prepro report $(OUT) --out $(dir $(OUT))report.html

test: setup browser
	$(PY) -m pytest -q tests

test-slow: setup browser
	$(PY) -m pytest -q --run-slow tests

clean:
	rm -rf $(VENV) out
