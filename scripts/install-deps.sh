#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, when they are missing:
#   libclang-dev, clang  - bindgen for the rocksdb crate
#   nftables, iproute2   - network-fault tests (network namespaces, drop rules)
# Rust (cargo, rustfmt, clippy) must already be installed (https://rustup.rs).
set -euo pipefail

packages=(libclang-dev clang nftables iproute2 curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in cargo rustfmt cargo-clippy; do
  command -v "$tool" >/dev/null || { echo "missing $tool: install Rust with rustup (components rustfmt, clippy)" >&2; exit 1; }
done
