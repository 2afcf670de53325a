#!/usr/bin/env bash
# Scale benchmark: the release `vpc-eni-controller run` as its own process,
# routes and ENI modes on, against the `fake-apiserver` (scheduler and
# kubelet stand-ins) and `fake-alibaba` processes holding N nodes and M
# realistic pods (~1.5 KB each; one in ten nodes also gets a pod asking for
# an ENI). Waits for everything to settle and prints one JSON document:
# the controller's peak RSS (VmHWM), pods created per second over HTTP,
# settle times. Not a test: nothing is asserted.
#
#   scripts/bench-scale.sh                      # 5,000 nodes / 100,000 pods
#   scripts/bench-scale.sh --nodes 1000 --pods 20000
#
# Other flags: --eni-pods K, --concurrency C (HTTP clients creating
# objects, 16), --settled-seconds S (20), --timeout-seconds T (1800).
# Builds the release binaries first (Alibaba-only controller, as
# `--no-default-features` builds it; the driver is `mocks/src/bin/bench-scale.rs`);
# honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
has() { local f; for f in "${args[@]}"; do [[ $f == "$1" ]] && return 0; done; return 1; }
has --nodes || args+=(--nodes 5000)
has --pods || args+=(--pods 100000)
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --no-default-features -p controller -p mocks --bins >&2
"$target/release/bench-scale" --bin-dir "$target/release" "${args[@]}"
