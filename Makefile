# The everyday commands. `make test` is what CI runs (after .ci/run has started Postgres and
# Redis); it needs Postgres at DATABASE_URL (default: the local `test` database).

DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
REDIS_URL ?= redis://127.0.0.1:6379
VENV ?= .venv
export DATABASE_URL REDIS_URL

.PHONY: test test-rust test-sdk test-contract test-deploy test-openapi test-console lint fmt dev bench venv

## Everything: the Rust suites (unit, store conformance on Postgres and SQLite, end to end),
## the official Python SDKs against the emulator and the gateway, and the admin API against
## its OpenAPI document (schemathesis), and the deployment files checked without a cluster or
## a Docker engine.
test: test-rust test-sdk test-contract test-deploy test-openapi test-console

test-rust:
	cargo build --workspace --bins
	cargo test --workspace

test-sdk: venv
	cargo build --workspace --bins
	$(VENV)/bin/python -m pytest tests/sdk -q

test-contract: venv
	cargo build --workspace --bins
	tests/contract/run.sh

## The Kubernetes manifests against the Kubernetes schemas (offline, strict) and against the
## gateway's drain and image; docker-compose.yml through Compose's own validation (needs
## `docker compose` or the standalone `docker-compose`; CI installs the latter).
test-deploy: venv
	$(VENV)/bin/python deploy/check.py
	@if docker compose version >/dev/null 2>&1; then compose="docker compose"; \
	elif command -v docker-compose >/dev/null 2>&1; then compose=docker-compose; \
	else echo "test-deploy: no docker compose to validate docker-compose.yml with" >&2; exit 1; fi; \
	BULKHEAD_MASTER_KEY=check BULKHEAD_ADMIN_TOKEN=check BULKHEAD_JWT_SECRET=check \
	  $$compose -f docker-compose.yml config -q && echo "docker-compose.yml: valid ($$compose)"

## Both OpenAPI documents (admin and tenant) through Redocly's linter (recommended rules;
## tests/openapi/redocly.yaml lists the exceptions). Needs Node.js and npm.
test-openapi:
	cd tests/openapi && (test -x node_modules/.bin/redocly || npm ci --no-audit --no-fund --loglevel=error)
	tests/openapi/node_modules/.bin/redocly lint --config tests/openapi/redocly.yaml \
	  crates/api/src/admin/openapi.json crates/api/src/tenant_openapi.json

## The admin console: its vendored chart library rebuilt from the lockfile and compared with
## the committed copy (needs npm), then the browser tests in a headless Chromium (Debian's
## `chromium`; screenshots of every page in target/console-screenshots).
test-console: venv
	cd crates/api/console && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	cmp crates/api/console/node_modules/uplot/dist/uPlot.iife.min.js crates/api/console/vendor/uPlot.iife.min.js
	cmp crates/api/console/node_modules/uplot/dist/uPlot.min.css crates/api/console/vendor/uPlot.min.css
	@echo "console vendor files: reproduced from package-lock.json"
	cargo build --workspace --bins
	$(VENV)/bin/python -m pytest tests/console -q

venv: $(VENV)/.installed

$(VENV)/.installed: tests/sdk/requirements.txt tests/contract/requirements.txt deploy/requirements.txt tests/console/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt -r tests/contract/requirements.txt -r deploy/requirements.txt -r tests/console/requirements.txt
	touch $@

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

## The gateway on the embedded store, with the Azure emulator in the same process.
dev:
	cargo run -- --emulator

bench:
	@echo "see bench/README.md"
