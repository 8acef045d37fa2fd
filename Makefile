# One entry point for common tasks; CI (.ci/run) calls `make test` too.
.PHONY: deps dev test fmt lint unit build

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

test: deps fmt lint unit ## everything CI runs
