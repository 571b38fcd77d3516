# Every target creates or refreshes the local virtualenv first, so a fresh clone needs only python3 (>= 3.11).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: test demo install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/sparsesync demo --out ./demo-out

bench: $(STAMP)
	$(VENV)/bin/sparsesync bench --help

clean:
	rm -rf $(VENV) demo-out .pytest_cache .hypothesis
