# Every target creates or refreshes the local virtualenv first, so a fresh clone needs only python3 (>= 3.11).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The package alone, without the test extras (moto, dask, connectorx, …): what `make demo` needs.
RUN_STAMP := $(VENV)/.installed-run-stamp

.PHONY: test demo install install-run bench clean

install: $(STAMP)

install-run: $(RUN_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# A venv that already has the test install (newer than pyproject.toml) is used as it is.
$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if [ ! -f $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ]; then $(PY) -m pip install --quiet -e .; fi
	touch $(RUN_STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: $(RUN_STAMP)
	$(VENV)/bin/sparsesync demo --out ./demo-out

bench: $(STAMP)
	$(VENV)/bin/sparsesync bench --help

clean:
	rm -rf $(VENV) demo-out .pytest_cache .hypothesis
