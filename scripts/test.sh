#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need first, when missing:
# - kubectl (Debian package kubernetes-client) for the fake-apiserver tests;
# - moto[server] in ./.venv for the AWS provider tests;
# - as root, the reference CNI plugins (Debian containernetworking-plugins)
#   and ping (iputils-ping) for the cni crate's network-namespace tests.
# Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v kubectl >/dev/null 2>&1; then
  echo "==> installing kubectl (Debian package kubernetes-client)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
fi

if [ "$(id -u)" = 0 ] && { [ ! -x /usr/lib/cni/ptp ] || ! command -v ping >/dev/null 2>&1; }; then
  echo "==> installing containernetworking-plugins and iputils-ping"
  apt-get update -qq
  env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containernetworking-plugins iputils-ping >/dev/null
fi

if [ ! -x .venv/bin/moto_server ]; then
  echo "==> installing moto[server] into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q 'moto[server]'
fi
export MOTO_SERVER="$PWD/.venv/bin/moto_server"

echo "==> cargo test --workspace"
cargo test --workspace "$@"
