#!/usr/bin/env bash
# raft-sidecar against etcd, side by side on this machine, in one run (docs/benchmarks.md).
#
#   scripts/bench-compare.sh                 # the full table (1M-operation RSS run included)
#   scripts/bench-compare.sh --quick         # a 2-minute check of the setup
#   scripts/bench-compare.sh --rss-ops 100000 --rounds 3   # any `raft-bench compare` flag
#
# Needs etcd: Debian's `apt-get install -y etcd-server` (or `--etcd-bin PATH` to another etcd v3).
# Builds raft-sidecar and raft-bench (release); raft-bench runs the raft-sidecar beside it.
# Prints progress lines, then the Markdown table; writes the raw results as JSON and the table
# as Markdown under $BENCH_OUT (default target/bench). Nothing is asserted; the exit code is
# non-zero only when the harness itself fails (a cluster does not start, etcd is missing, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_OUT:-target/bench}
mkdir -p "$out"
cargo build --release -p raft-sidecar -p raft-bench >&2
dir=${CARGO_TARGET_DIR:-target}/release
stamp=$(date -u +%Y%m%dT%H%M%SZ)
exec "$dir/raft-bench" compare --sidecar-bin "$dir/raft-sidecar" \
  --json "$out/compare-$stamp.json" --markdown "$out/compare-$stamp.md" "$@"
