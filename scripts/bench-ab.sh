#!/usr/bin/env bash
# A/B of two raft-sidecar binaries on the same machine in one run, alternating (the machine is
# shared and noisy, so only figures from the same run compare):
#   scripts/bench-ab.sh OLD_BIN NEW_BIN [ROUNDS] [extra `bench throughput` flags...]
# Each round runs `bench throughput` with both binaries (order swapped every round) and prints
# one line per binary and client count.
set -euo pipefail
old=${1:?old binary}; new=${2:?new binary}; rounds=${3:-2}; shift 3 || shift $#
for ((r = 1; r <= rounds; r++)); do
  if ((r % 2)); then order=("$old" "$new"); else order=("$new" "$old"); fi
  for bin in "${order[@]}"; do
    "$bin" bench throughput --clients 1,64,256 --duration 4s --warmup 1s "$@" 2>/dev/null |
      grep '^clients=' | sed "s|^|round=$r bin=$(basename "$bin") load=$(cut -d' ' -f1 /proc/loadavg) |"
  done
done
