# The everyday commands. `make test` is what CI runs (after .ci/run has started Postgres and
# Redis); it needs Postgres at DATABASE_URL (default: the local `test` database).

DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
REDIS_URL ?= redis://127.0.0.1:6379
VENV ?= .venv
export DATABASE_URL REDIS_URL

.PHONY: test test-rust test-sdk test-contract lint fmt dev bench venv

## Everything: the Rust suites (unit, store conformance on Postgres and SQLite, end to end),
## the official Python SDKs against the emulator and the gateway, and the admin API against
## its OpenAPI document (schemathesis).
test: test-rust test-sdk test-contract

test-rust:
	cargo build --workspace --bins
	cargo test --workspace

test-sdk: venv
	cargo build --workspace --bins
	$(VENV)/bin/python -m pytest tests/sdk -q

test-contract: venv
	cargo build --workspace --bins
	tests/contract/run.sh

venv: $(VENV)/.installed

$(VENV)/.installed: tests/sdk/requirements.txt tests/contract/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt -r tests/contract/requirements.txt
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
