#!/usr/bin/env bash
# The Kubernetes end-to-end suite on a local control plane (what `.ci/run` runs here; kind users
# run e2e/kind/run.sh instead): build the binaries the pods and the operator run, bring the
# cluster up, run the `e2e` test of `raft-e2e`, and always bring it down again.
# Needs root (network namespaces). Container and control-plane logs of a failed run are copied
# to $E2E_LOG_DIR (default: target dir/e2e-logs).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-$PWD/target}
export E2E_LOG_DIR=${E2E_LOG_DIR:-$target/e2e-logs}

[[ $(id -u) -eq 0 ]] || { echo "e2e-local: needs root (network namespaces, bridge, mounts)" >&2; exit 1; }

# Always rebuild: the cluster script only builds binaries that are missing, never stale ones.
# `--workspace`, not `-p`: the same features as `cargo test --workspace`, so RocksDB is not
# compiled a second time (see the Makefile).
cargo build --workspace --bin raft-sidecar --bin raft-operator --bin raft-test-agent \
	--bin raft-example-daemon --bin kubectl-raft
cargo test --no-run --workspace --test e2e

e2e/local/cluster down >/dev/null 2>&1 || true
trap 'e2e/local/cluster down >&2 || true' EXIT
KUBECONFIG=$(e2e/local/cluster up | tail -n 1)
export KUBECONFIG
cargo test --workspace --test e2e -- --test-threads=1 "$@"
