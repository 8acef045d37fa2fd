# One entry point for common tasks; CI (.ci/run) calls `make test` too.
.PHONY: deps dev test tools-early fmt deny lint unit build js-client chart e2e nemesis

deps: ## Debian packages the build and tests need (libclang-dev for rocksdb, ...)
	./scripts/install-deps.sh

dev: deps ## a local 3-node cluster on loopback (Ctrl-C stops it)
	cargo run -p raft-sidecar -- dev

build: deps
	cargo build --workspace --all-targets

fmt:
	cargo fmt --all -- --check

# Without the inclusion graphs, the duplicate-version warnings take ~150 lines instead of ~2000;
# `scripts/cargo-deny.sh check bans` shows which crates pull each one in.
deny: ## cargo deny check licenses bans sources (deny.toml; cargo-deny built once, cached)
	./scripts/cargo-deny.sh check --hide-inclusion-graph licenses bans sources

# Every cargo command here selects targets with `--workspace`, never `-p`: features (of the
# build tools RocksDB's bindings are generated with, among others) are unified over the selected
# packages, so a `-p raft-sidecar` build resolves them differently and compiles RocksDB a second
# time (~13 minutes on 2 cores on a machine that never built it).
lint:
	cargo clippy --workspace --all-targets -- -D warnings
	# test = false targets (run on their own) are not covered by --all-targets
	cargo clippy --workspace --test nemesis -- -D warnings
	cargo clippy --workspace --test e2e -- -D warnings

unit:
	cargo test --workspace

js-client: ## the JavaScript client's tests, against real sidecar processes
	cargo build --workspace --bin raft-sidecar
	cd sidecar/clients/js && npm test && npm pack --dry-run --silent >/dev/null

chart: ## helm lint + kubeconform -strict of charts/raft-operator (tools built offline, cached)
	./scripts/check-chart.sh

e2e: ## Kubernetes end-to-end suite on a local control plane (root; builds it once, cached)
	./scripts/e2e-local.sh

nemesis: ## seeded fault schedule + checker (root); NEMESIS_SEED=S replays a run
	NEMESIS_SECONDS=$${NEMESIS_SECONDS:-90} cargo test --workspace --test nemesis -- --nocapture

# The Go-built tools (versitygw for the backup tests, helm for the chart check, the control
# plane for e2e: ~25 minutes of CPU on a machine that never built them) start building at the
# lowest priority while Rust compiles and the tests run, using the CPU time they leave idle; the
# backup tests, `chart` and `e2e` wait for them (build.sh holds a lock per tool) and build
# whatever is still missing themselves, with any error in view.
tools-early:
	@log="$${CARGO_TARGET_DIR:-target}/controlplane-build.log"; mkdir -p "$$(dirname "$$log")"; \
	echo "building the control-plane tools in the background (log: $$log)"; \
	nohup nice -n 19 e2e/controlplane/build.sh versitygw helm etcd kubernetes cert-manager >"$$log" 2>&1 </dev/null &

test: deps tools-early fmt deny lint unit js-client chart e2e nemesis ## everything CI runs
