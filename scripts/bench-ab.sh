#!/usr/bin/env bash
# A/B of two raft-sidecar binaries on the same machine in one run, alternating (the machine is
# shared and noisy, so only figures from the same run compare):
#   scripts/bench-ab.sh OLD_BIN NEW_BIN [ROUNDS] [extra `raft-bench throughput` flags...]
# Each round runs `raft-bench throughput --sidecar-bin BIN` with both binaries (order swapped
# every round) and prints one line per binary and client count. The same load generator drives
# both: raft-bench is built here (release) unless RAFT_BENCH names one.
set -euo pipefail
old=${1:?old binary}; new=${2:?new binary}; rounds=${3:-2}; shift 3 || shift $#
bench=${RAFT_BENCH:-}
if [[ -z $bench ]]; then
  root=$(cd "$(dirname "$0")/.." && pwd)
  (cd "$root" && cargo build --release -p raft-bench >&2)
  target=${CARGO_TARGET_DIR:-target}
  [[ $target == /* ]] || target=$root/$target
  bench=$target/release/raft-bench
fi
for ((r = 1; r <= rounds; r++)); do
  if ((r % 2)); then order=("$old" "$new"); else order=("$new" "$old"); fi
  for bin in "${order[@]}"; do
    "$bench" throughput --sidecar-bin "$bin" --clients 1,64,256 --duration 4s --warmup 1s "$@" 2>/dev/null |
      grep '^clients=' | sed "s|^|round=$r bin=$(basename "$bin") load=$(cut -d' ' -f1 /proc/loadavg) |"
  done
done
