#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, when they are missing:
#   libclang-dev, clang  - bindgen for the rocksdb crate
#   nftables, iproute2   - network-fault tests (network namespaces, drop rules)
# Rust (cargo, rustfmt, clippy) must already be installed (https://rustup.rs), and Node.js 20.3
# or later for the JavaScript client's tests (Debian bookworm's nodejs is 18: too old).
set -euo pipefail

packages=(libclang-dev clang nftables iproute2 curl openssl util-linux)
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
for tool in go python3 openssl; do
  command -v "$tool" >/dev/null || { echo "missing $tool: needed to build the local control plane and check the chart" >&2; exit 1; }
done
node_ok=$(node -e 'const [a,b]=process.versions.node.split(".").map(Number); console.log(a>20||(a===20&&b>=3)?"yes":"no")' 2>/dev/null || echo no)
[[ $node_ok == yes ]] || { echo "missing Node.js >= 20.3 (found: $(node --version 2>/dev/null || echo none)): needed by sidecar/clients/js tests" >&2; exit 1; }
