# One entry point for common tasks; CI (.ci/run) calls `make test` too.
.PHONY: deps dev test fmt lint unit build js-client

deps: ## Debian packages the build and tests need (libclang-dev for rocksdb, ...)
	./scripts/install-deps.sh

dev: deps ## a local 3-node cluster on loopback (Ctrl-C stops it)
	cargo run -p raft-sidecar -- dev

build: deps
	cargo build --workspace --all-targets

fmt:
	cargo fmt --all -- --check

lint:
	cargo clippy --all-targets -- -D warnings

unit:
	cargo test --workspace

js-client: ## the JavaScript client's tests, against real sidecar processes
	cargo build -p raft-sidecar
	cd sidecar/clients/js && npm test && npm pack --dry-run --silent >/dev/null

test: deps fmt lint unit js-client ## everything CI runs
