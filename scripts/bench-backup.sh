#!/usr/bin/env bash
# Backup and restore times after N operations (docs/benchmarks.md, "Backup and restore").
#
#   scripts/bench-backup.sh              # 1,000,000 operations by 256 clients
#   OPS=100000 scripts/bench-backup.sh   # a quicker run
#
# Builds raft-sidecar and raft-bench (release) and versitygw (e2e/controlplane/build.sh). Loads a
# 3-node cluster with `raft-bench rss --keep-dir`, starts its node-0 alone on its data dir, then
# times `ctl backup` (snapshot built first, then the current snapshot) to a directory and to
# S3 (versitygw on loopback), and `raft-sidecar restore` from each. Prints each step's wall
# time and peak RSS (GNU time); nothing is asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
ops=${OPS:-1000000}
cargo build --release -p raft-sidecar -p raft-bench >&2
bin=${CARGO_TARGET_DIR:-target}/release
eval "$(e2e/controlplane/build.sh versitygw)"
work=$(mktemp -d /tmp/bench-backup.XXXXXX)
node=
s3=
cleanup() {
	[[ -n $node ]] && kill "$node" 2>/dev/null
	[[ -n $s3 ]] && kill "$s3" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
timed() { /usr/bin/time -f "  wall %e s, peak RSS %M KiB" "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== load: $ops operations by 256 clients (raft-bench rss)"
"$bin/raft-bench" rss --sidecar-bin "$bin/raft-sidecar" --ops "$ops" --clients 256 \
	--curve-every 0 --idle 1s --dir "$work/cluster" --keep-dir --json "$work/load.json" >/dev/null
python3 - "$work/load.json" <<'PYTHON'
import json, sys
r = json.load(open(sys.argv[1]))
print("  %d operations in %.1f s, %d failed" % (r["ops"], r["opsMs"] / 1000, r["opsFailed"]))
PYTHON

c=$work/cluster
admin=$(free_port)
"$bin/raft-sidecar" run --data-dir "$c/node-0" --node-name node-0 --cluster-id dev \
	--api-addr "127.0.0.1:$(free_port)" --admin-addr "127.0.0.1:$admin" \
	--peer-addr "127.0.0.1:$(free_port)" --advertise-admin "127.0.0.1:$admin" \
	--auth-token-file "$c/token" --tls-cert "$c/tls/node-0/tls.crt" \
	--tls-key "$c/tls/node-0/tls.key" --tls-ca "$c/tls/node-0/ca.crt" >"$work/node-0.log" 2>&1 &
node=$!
ctl=("$bin/raft-sidecar" ctl --admin "127.0.0.1:$admin" --token-file "$c/token" --timeout 120s
	--tls-cert "$c/tls/raft-admin/tls.crt" --tls-key "$c/tls/raft-admin/tls.key"
	--tls-ca "$c/tls/raft-admin/ca.crt")
for _ in $(seq 1 150); do "${ctl[@]}" status >/dev/null 2>&1 && break; sleep 0.2; done

s3_port=$(free_port)
mkdir -p "$work/s3/backups"
"$S3_BIN/versitygw" --access bench --secret bench-secret --quiet --port "127.0.0.1:$s3_port" \
	posix "$work/s3" >/dev/null 2>&1 &
s3=$!
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port AWS_ACCESS_KEY_ID=bench
export AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1

echo "== backup to a directory, snapshot built first"
timed "${ctl[@]}" backup "$work/backups/"
echo "== backup to a directory, the current snapshot (--no-build)"
timed "${ctl[@]}" backup "$work/backups/" --no-build
echo "== backup to S3 (versitygw on loopback), the current snapshot"
timed "${ctl[@]}" backup s3://backups/bench --no-build
member=(--cluster-id restored --node-name r0 --advertise-peer 127.0.0.1:1 --advertise-admin 127.0.0.1:2)
echo "== restore from the directory (newest)"
timed "$bin/raft-sidecar" restore --from "$work/backups/" --data-dir "$work/restored-dir" "${member[@]}"
echo "  data dir: $(du -sh "$work/restored-dir" | cut -f1)"
echo "== restore from S3 (newest)"
timed "$bin/raft-sidecar" restore --from s3://backups/bench --data-dir "$work/restored-s3" "${member[@]}"
