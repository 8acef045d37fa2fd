#!/usr/bin/env bash
# Supply-chain check of the dependency graph: `cargo deny check licenses bans sources` with the
# rules in deny.toml (allowed licences, banned/duplicate crates, allowed registries and git
# sources). Extra arguments replace the default checks: `scripts/cargo-deny.sh check advisories`.
#
# Advisories (RustSec) are not checked here: they need the advisory database, cloned from GitHub
# at run time, which CI's machine cannot reach; .github/workflows/supply-chain.yml checks them.
# licenses, bans and sources need only `cargo metadata` and the crates' sources (crates.io).
#
# cargo-deny is built from crates.io when missing, with its own Cargo.lock (--locked), and cached
# outside the repository, keyed by version:
#   $TOOLS/cargo-deny-$CARGO_DENY_VERSION/bin/cargo-deny
#   TOOLS = ${UNRDF_TOOLS_CACHE:-$HOME/.cache/unrdf-consensus/tools}
# The build uses a target directory of its own ($TOOLS/cargo-deny-$CARGO_DENY_VERSION.build.$$,
# removed afterwards), not the project's CARGO_TARGET_DIR, so the project's build cache does not
# grow by the tool's ~300 crates. A cached binary of another version is not used.
#
# Needs: cargo (Rust >= 1.88, cargo-deny 0.20's rust-version) and crates.io.
#
# Measured 2026-12-04 on the shared 2-core machine, with another Rust and Go build running:
#   cold (empty CARGO_HOME and tools cache, as in `COLD=1 .ci/run`): 200 s to download and build
#     cargo-deny 0.20.2 (168 s user + 17 s system CPU, 0.7 GB peak memory), then the check 7 s
#     (downloading the workspace's crates into the empty CARGO_HOME); 207 s in all
#   warm (binary cached, crates downloaded): 2 s
#   cache size: 8.5 MB (the binary; the build's target directory is removed)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_DENY_VERSION=0.20.2
tools=${UNRDF_TOOLS_CACHE:-$HOME/.cache/unrdf-consensus/tools}
dir=$tools/cargo-deny-$CARGO_DENY_VERSION
deny=$dir/bin/cargo-deny

log() { printf 'cargo-deny: %s\n' "$*" >&2; }
die() {
	log "FAIL: $*"
	exit 1
}
run() {
	printf '+ %s\n' "$*" >&2
	"$@"
}

command -v cargo >/dev/null || die "cargo is not installed"

installed_version() { "$deny" --version 2>/dev/null | awk '{ print $2 }'; }

if [[ ! -x $deny || $(installed_version) != "$CARGO_DENY_VERSION" ]]; then
	log "cargo-deny $CARGO_DENY_VERSION: building into $dir (once per machine)"
	mkdir -p "$tools"
	tmp=$dir.tmp.$$
	target=$dir.build.$$
	trap 'rm -rf "$tmp" "$target"' EXIT
	rm -rf "$tmp" "$target"
	start=$SECONDS
	run env CARGO_TARGET_DIR="$target" nice -n 10 cargo install cargo-deny \
		--locked --version "=$CARGO_DENY_VERSION" --root "$tmp" --quiet
	[[ $("$tmp/bin/cargo-deny" --version | awk '{ print $2 }') == "$CARGO_DENY_VERSION" ]] ||
		die "the built cargo-deny is not version $CARGO_DENY_VERSION"
	# Publish the finished directory, unless a concurrent run did first.
	rm -rf "$dir"
	mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"
	log "cargo-deny $CARGO_DENY_VERSION: built in $((SECONDS - start)) s"
fi

args=("$@")
((${#args[@]})) || args=(check licenses bans sources)
# cargo-deny's own `cargo deny` form; the binary takes the subcommand name as its first argument.
run "$deny" deny "${args[@]}"
