# Two commands matter: `make serve` and `make test`. Both build .venv when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# `make serve` uses strongroom.toml when it exists; CONFIG=FILE names another.
CONFIG ?= $(wildcard strongroom.toml)
# The web page's tests drive Debian's chromium (never a browser Playwright
# downloads); `make test` installs it once when it is missing.
CHROMIUM := /usr/bin/chromium
# The offload tests put Debian's nginx in front of the app (issue 6).
NGINX := /usr/sbin/nginx

.PHONY: serve test proof lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

serve: $(STAMP)
	$(BIN)/strongroom $(if $(CONFIG),--config $(CONFIG)) serve

$(CHROMIUM):
	@echo "installing chromium for the browser tests (apt-get, once)"
	@(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium fonts-dejavu-core) >/dev/null 2>&1 \
	  || echo "chromium could not be installed: browser tests skip (and fail under CI)"

$(NGINX):
	@echo "installing nginx-light for the offload tests (apt-get, once)"
	@(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends nginx-light) >/dev/null 2>&1 \
	  || echo "nginx could not be installed: offload tests skip (and fail under CI)"

# The whole suite on the embedded default (SQLite, local blobs), then the HTTP
# suite again on PostgreSQL (127.0.0.1:5432) and S3 (SeaweedFS, started by the
# tests on loopback): the same tests, other engines (issue 6).
test: $(TEST_STAMP) | $(CHROMIUM) $(NGINX)
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest
	SR_TEST_BACKEND=postgresql-s3 $(BIN)/pytest tests/api

# The adversarial families against real servers on loopback, with a report in
# proof/ (issue 7). PROFILE=short is what CI runs; the default is the full numbers.
PROFILE ?= long
proof: $(TEST_STAMP) | $(CHROMIUM) $(NGINX)
	$(BIN)/python tests/proof/report.py --profile $(PROFILE)

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(TEST_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
