#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need first, when missing:
# - kubectl (Debian package kubernetes-client) for the fake-apiserver tests;
# - ip/bridge, ping and the reference CNI plugins (Debian iproute2,
#   iputils-ping, containernetworking-plugins) for the network-namespace tests
#   of the lab (mocks::lab) and the plugin (cni); they run as root and skip
#   with a reason otherwise;
# - FRR (Debian frr: bgpd, vtysh) for the BGP backend's tests against a real
#   router (controller/tests/bgp_frr.rs); they run as root and skip with a
#   reason otherwise;
# - moto[server] in ./.venv for the AWS provider tests.
# Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v kubectl >/dev/null 2>&1; then
  echo "==> installing kubectl (Debian package kubernetes-client)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubernetes-client >/dev/null
fi

lab_packages=()
command -v ip >/dev/null 2>&1 || lab_packages+=(iproute2)
command -v ping >/dev/null 2>&1 || lab_packages+=(iputils-ping)
{ [ -x /usr/lib/cni/loopback ] && [ -x /usr/lib/cni/ptp ]; } || lab_packages+=(containernetworking-plugins)
if [ "${#lab_packages[@]}" -gt 0 ]; then
  echo "==> installing ${lab_packages[*]} for the lab tests"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${lab_packages[@]}" >/dev/null
fi

if [ ! -x /usr/lib/frr/bgpd ] || ! command -v vtysh >/dev/null 2>&1; then
  echo "==> installing frr for the BGP tests"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq frr >/dev/null
fi

if [ ! -x .venv/bin/moto_server ]; then
  echo "==> installing moto[server] into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q 'moto[server]'
fi
export MOTO_SERVER="$PWD/.venv/bin/moto_server"

echo "==> cargo test --workspace"
cargo test --workspace "$@"
