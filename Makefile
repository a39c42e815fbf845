# The verbs people type. `make` alone lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
# Tests and the local system use the identity `make setup` creates.
export HEIMDALL_TEST_DATABASE_URL ?= postgres://heimdall:heimdall@127.0.0.1:5432/postgres
export HEIMDALL_TEST_NATS_URL ?= nats://127.0.0.1:4222
SHARED ?= ../shared

.PHONY: help setup demo test test-rust score lint fmt bench up down status deploy-check audit clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-13s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## Install packages and tools; start PostgreSQL and NATS (idempotent)
	@bash scripts/setup.sh

demo: setup ## Run the split system locally and push a stream of records through it
	@bash scripts/demo.sh

test: setup deploy-check test-rust score ## Everything CI checks: setup, deploy-check, all tests, scoring suites

# Service logs and exported spans of the whole suite, for the secret scan.
export HEIMDALL_TEST_LOG_DIR ?= $(or $(TMPDIR),/tmp)/heimdall-test-logs

test-rust:
	@rm -rf "$(HEIMDALL_TEST_LOG_DIR)" && mkdir -p "$(HEIMDALL_TEST_LOG_DIR)"
	@if command -v cargo-nextest >/dev/null; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  echo "cargo-nextest not found: running cargo test"; $(CARGO) test --workspace --no-fail-fast; \
	fi
	@$(CARGO) test --workspace --doc
	@if command -v cargo-nextest >/dev/null; then \
	  bash scripts/secret-scan.sh "$(HEIMDALL_TEST_LOG_DIR)" target/nextest/default/junit.xml; \
	else \
	  bash scripts/secret-scan.sh "$(HEIMDALL_TEST_LOG_DIR)"; \
	fi

score: ## Score `heimdall analyze` against the reference data in ../shared (SCORE lines)
	@bash scripts/score.sh "$(SHARED)"

lint: ## fmt check, clippy with warnings denied, dependency policy (cargo-deny)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@$(MAKE) --no-print-directory audit

audit: ## Dependency policy: licences, sources, bans, RustSec advisories (offline snapshot)
	@bash scripts/audit.sh "$(SHARED)/advisory-db"

fmt: ## Format the code
	$(CARGO) fmt --all

bench: setup ## Benchmarks: analyze vs a bare libpcap loop and tshark on 2M+ packets; the bus into Postgres
	@bash scripts/bench.sh "$(SHARED)"

up: setup ## Start the split system as local processes (no containers)
	@bash scripts/up.sh start

down: ## Stop what `make up` started
	@bash scripts/up.sh stop

status: ## Show what `make up` runs and whether each is ready
	@bash scripts/up.sh status

deploy-check: ## Validate compose.yaml and k8s/ with real validators
	@bash scripts/install-validators.sh
	@bash scripts/deploy-check.sh

clean: down ## Remove build output and local run state
	$(CARGO) clean
	rm -rf .run
