#!/usr/bin/env bash
# Installs cargo-generate (renders templates/mapper) into target/test-env/bin,
# idempotently: nothing happens when a `cargo generate` of at least 0.26
# already works, or the binary is already there.
#
# `cargo install cargo-generate` does not build on Rust 1.95: its newest
# dependencies (cargo-util-schemas 0.14.3, kstring 2.0.5) need 1.96-1.97, and
# `cargo install` ignores the resolver's rust-version fallback. So the
# published 0.26.0 source is fetched from crates.io (checksum checked against
# the crates.io index), locked with that fallback (which picks versions that
# build on the installed toolchain) and installed from the unpacked source.
# A debug build without debug info (the tool renders a template in
# milliseconds either way; an optimised build of its ~300 crates, libgit2
# among them, takes twice as long to compile).
#
#   bash hack/install-cargo-generate.sh
#   PATH="$PWD/target/test-env/bin:$PATH" cargo generate --version
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

VERSION=0.26.0
SHA256=ea9ee6811226aaf7ed01ce04177606943c808177ac2fba8ebb40c17a1d8e6b14
PREFIX="$ROOT/target/test-env"
BIN="$PREFIX/bin/cargo-generate"

# The version of `cargo generate` found first on PATH (with target/test-env/bin
# first when asked), empty when there is none.
found_version() {
  local path=$PATH
  [ "${1:-}" = cached ] && path="$PREFIX/bin:$PATH"
  { PATH=$path cargo generate --version 2>/dev/null || true; } | awk '{print $NF}'
}
# At least 0.26 (templates/mapper needs it: it formats the generated code).
new_enough() {
  [ -n "$1" ] && [ "$(printf '%s\n%s\n' "$1" 0.26.0 | sort -V | head -1)" = 0.26.0 ]
}

v=$(found_version)
if new_enough "$v"; then
  echo "cargo-generate $v present"
  exit 0
fi
if [ -x "$BIN" ] && new_enough "$(found_version cached)"; then
  echo "cargo-generate $(found_version cached) present: $BIN"
  exit 0
fi

for tool in curl tar sha256sum; do
  if ! command -v "$tool" >/dev/null; then
    echo "install-cargo-generate: $tool is needed" >&2
    exit 1
  fi
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
echo "installing cargo-generate $VERSION from source into $PREFIX (a few minutes)"
curl -sSfL --retry 3 -o "$WORK/cargo-generate.crate" \
  "https://static.crates.io/crates/cargo-generate/cargo-generate-$VERSION.crate"
if ! echo "$SHA256  $WORK/cargo-generate.crate" | sha256sum --check --quiet; then
  echo "install-cargo-generate: checksum mismatch for cargo-generate-$VERSION.crate" >&2
  exit 1
fi
tar -xzf "$WORK/cargo-generate.crate" -C "$WORK"
(
  cd "$WORK/cargo-generate-$VERSION"
  # Re-lock for the installed toolchain: the shipped Cargo.lock needs a newer Rust.
  CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo generate-lockfile --quiet
  CARGO_PROFILE_DEV_DEBUG=0 cargo install --debug --locked --quiet --path . \
    --root "$PREFIX" --target-dir "$WORK/target"
)
if ! new_enough "$(found_version cached)"; then
  echo "install-cargo-generate: $BIN was installed but does not run" >&2
  exit 1
fi
echo "cargo-generate $VERSION installed in $(($(date +%s) - start)) s: $BIN"
