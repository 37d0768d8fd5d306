# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.medsyft-installed

.PHONY: demo test lint typecheck install clean wheelhouse base-image image postgres-image

# One resolver pass with exact pins (see docs/install.md): installing opacus or tenseal after
# syft in a second pip call would upgrade numpy past syft's pin.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,dev,export,tracking]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medsyft demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# pytest exits 5 when it collects nothing; that must fail CI, not pass it silently.
test: $(STAMP) lint typecheck
	$(PY) -m pytest

# The offline bundle: every wheel medsyft needs (no test or dev tools), for air-gapped hosts and the image.
wheelhouse: $(STAMP)
	rm -rf wheelhouse
	$(PY) -m pip wheel --quiet --wheel-dir wheelhouse -c constraints.txt .

# A Debian bookworm base (python3 3.11) made offline from the machine's apt source, for `docker import`.
base-image:
	mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1,passwd \
	    bookworm - | docker import - medsyft-base:bookworm

# A hospital's PostgreSQL 15 for deploy/compose.yaml, on a base made the same way.
postgres-image:
	mmdebstrap --variant=minbase --include=postgresql-15,passwd bookworm - \
	    | docker import - medsyft-postgres-base:15
	docker build -f deploy/postgres.Dockerfile -t medsyft-postgres:15 deploy/

BASE ?= python:3.11-slim
image: wheelhouse
	docker build -f deploy/Dockerfile --build-arg BASE=$(BASE) -t medsyft:0.1.0 .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-run wheelhouse
