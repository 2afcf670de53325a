#!/usr/bin/env bash
# Build the container image (Containerfile) with podman, or docker when
# podman is missing: the binaries are compiled here as static musl
# executables, then copied into an empty (FROM scratch) image with the CA
# certificates and a non-root user.
#
# Usage: ./scripts/build-image.sh
#   IMAGE       image name      (default registry.example.com/vpc-eni-controller,
#                                the name the manifests' overlays use)
#   TAG         image tag       (default: the workspace version in Cargo.toml)
#   FEATURES    controller features (default aws; "" for an Alibaba-only binary)
#   IMAGE_TARGET_DIR  cargo target dir of the musl build (default target/image)
#   CA_BUNDLE   CA certificates to ship (default /etc/ssl/certs/ca-certificates.crt)
#
# Needs: rustup's x86_64-unknown-linux-musl target (added when missing) and
# musl-gcc for the C parts of aws-lc-rs (Debian: apt-get install musl-tools).
# Then push it: podman push "$IMAGE:$TAG", and keep the overlays'
# `images:` (manifests/*/kustomization.yaml) on the same name and tag.
set -euo pipefail
cd "$(dirname "$0")/.."

workspace_version() {
  sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml
}

IMAGE="${IMAGE:-registry.example.com/vpc-eni-controller}"
TAG="${TAG:-$(workspace_version)}"
FEATURES="${FEATURES-aws}"
IMAGE_TARGET_DIR="${IMAGE_TARGET_DIR:-$PWD/target/image}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
TARGET=x86_64-unknown-linux-musl

if command -v podman >/dev/null 2>&1; then
  ENGINE=podman
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  ENGINE=docker
else
  echo "build-image: neither podman nor a running docker found (Debian: apt-get install podman)" >&2
  exit 1
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "==> rustup target add $TARGET"
  rustup target add "$TARGET"
fi
if ! command -v musl-gcc >/dev/null 2>&1 && ! command -v x86_64-linux-musl-gcc >/dev/null 2>&1; then
  echo "build-image: no musl C compiler for aws-lc-rs (Debian: apt-get install musl-tools)" >&2
  exit 1
fi
if [ ! -s "$CA_BUNDLE" ]; then
  echo "build-image: no CA bundle at $CA_BUNDLE (Debian: apt-get install ca-certificates)" >&2
  exit 1
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/bin" "$context/etc/ssl/certs"

has_package() {
  local metadata
  metadata="$(cargo metadata --no-deps --format-version 1)"
  grep -q "\"name\":\"$1\"" <<<"$metadata"
}

# build_bin PACKAGE BINARY [cargo args]: a stripped static binary into bin/.
build_bin() {
  local package="$1" binary="$2"
  shift 2
  echo "==> cargo build --release --target $TARGET -p $package $*"
  CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_TARGET_DIR="$IMAGE_TARGET_DIR" \
    cargo build --release --locked --target "$TARGET" -p "$package" "$@"
  cp "$IMAGE_TARGET_DIR/$TARGET/release/$binary" "$context/bin/$binary"
}

build_bin controller vpc-eni-controller --no-default-features ${FEATURES:+--features "$FEATURES"}
if has_package cni; then
  build_bin cni vpc-eni-cni
fi

cp "$CA_BUNDLE" "$context/etc/ssl/certs/ca-certificates.crt"
printf 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$context/etc/passwd"
printf 'nonroot:x:65532:\n' >"$context/etc/group"

echo "==> $ENGINE build -t $IMAGE:$TAG"
"$ENGINE" build -f Containerfile --build-arg "VERSION=$TAG" -t "$IMAGE:$TAG" "$context"
size="$("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE:$TAG")"
echo "built $IMAGE:$TAG ($((size / 1024 / 1024)) MiB; binaries: $(ls "$context/bin" | tr '\n' ' '))"
