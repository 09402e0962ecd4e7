#!/usr/bin/env bash
# Renders templates/mapper with the real cargo-generate, both variants (polling
# only, and push=true), and checks each generated crate as a user would:
# cargo test, cargo clippy --all-targets -D warnings, cargo fmt --check and
# cargo doc -D warnings. So the template cannot drift from mapper-sdk. Then
# templates/wasm-driver the same way, plus its build for wasm32-wasip2 and a
# run of the built plugin in mapper-wasm (check_wasm below).
#
#   bash hack/check-template.sh
#   KEEP_TEMPLATE_OUTPUT=1 bash hack/check-template.sh   # keep the rendered crates
#
# The generated crates get this workspace's Cargo.lock (the same dependency
# versions) and build in the workspace's own target directory (or
# TEMPLATE_TARGET_DIR), so the dependencies the workspace build already
# compiled are reused and only the generated crate itself is new.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

fail() {
  echo "check-template: FAILED: $*" >&2
  exit 1
}

bash hack/install-cargo-generate.sh || fail "cargo-generate could not be installed (hack/install-cargo-generate.sh)"
export PATH="$ROOT/target/test-env/bin:$PATH"
export CARGO_TARGET_DIR="${TEMPLATE_TARGET_DIR:-$ROOT/target}"
# cargo-generate fills its `authors` placeholder from $USER (or git config)
# and refuses to run when it finds neither, as in some CI containers.
export USER="${USER:-$(id -un 2>/dev/null || echo ci)}"

OUT=$(mktemp -d)
if [ -n "${KEEP_TEMPLATE_OUTPUT:-}" ]; then
  echo "rendered crates are kept in $OUT"
else
  trap 'rm -rf "$OUT"' EXIT
fi

# "name" version, for every package of a Cargo.lock.
lock_pairs() {
  awk '/^name = /{n=$3} /^version = /{print n, $3}' "$1"
}

# check NAME PROTOCOL DRIVER_TYPE PUSH
check() {
  local name=$1 protocol=$2 driver=$3 push=$4
  local dir="$OUT/$name"
  echo "--- $name (protocol=$protocol driver_type=$driver push=$push)"
  cargo generate --path "$ROOT/templates/mapper" --destination "$OUT" --name "$name" \
    --silent --vcs none --no-workspace \
    --define protocol="$protocol" --define driver_type="$driver" --define push="$push" \
    --define sdk_path="$ROOT/mapper-sdk" \
    || fail "cargo generate could not render templates/mapper ($name)"
  [ -f "$dir/Cargo.toml" ] || fail "cargo generate did not create $dir/Cargo.toml"
  if grep -rnE '\{\{|\{%' "$dir"; then
    fail "$name: template syntax left in the generated files (above)"
  fi
  cp "$ROOT/Cargo.lock" "$dir/Cargo.lock"
  (
    cd "$dir"
    cargo fmt --check || fail "$name: generated code is not rustfmt clean"
    cargo test --quiet || fail "$name: cargo test failed in the generated crate"
    cargo clippy --quiet --all-targets -- -D warnings || fail "$name: cargo clippy found problems in the generated crate"
    RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps || fail "$name: cargo doc found problems in the generated crate"
  )
  # Same dependency versions as this workspace (the lock was copied, not re-resolved).
  local extra
  extra=$(comm -23 <(lock_pairs "$dir/Cargo.lock" | grep -v "^\"$name\" " | sort) \
                   <(lock_pairs "$ROOT/Cargo.lock" | sort))
  [ -z "$extra" ] || fail "$name: dependency versions this workspace does not use: $extra"
  echo "ok: $name"
}

start=$(date +%s)
check mapper-acme acme AcmeDriver false
check mapper-beacon beacon BeaconDriver true
echo "templates/mapper: both variants render, build, pass their tests, clippy, rustfmt and rustdoc ($(($(date +%s) - start)) s)"

# templates/wasm-driver: render, check the generated plugin crate as a user
# would (tests, clippy, rustfmt, rustdoc on the build machine), build it for
# wasm32-wasip2, and run it in the real host (mappers/wasm/tests/template.rs).
check_wasm() {
  local name=wasm-acme
  local dir="$OUT/$name"
  echo "--- $name (templates/wasm-driver)"
  cargo generate --path "$ROOT/templates/wasm-driver" --destination "$OUT" --name "$name" \
    --silent --vcs none --no-workspace \
    --define driver_type=AcmeDriver --define guest_path="$ROOT/mappers/wasm/guest" \
    || fail "cargo generate could not render templates/wasm-driver"
  if grep -rnE '\{\{|\{%' "$dir"; then
    fail "$name: template syntax left in the generated files (above)"
  fi
  # The example plugins' lock: the same guest dependency versions.
  cp "$ROOT/mappers/wasm/plugins/Cargo.lock" "$dir/Cargo.lock"
  (
    cd "$dir"
    cargo fmt --check || fail "$name: generated code is not rustfmt clean"
    cargo test --quiet || fail "$name: cargo test failed in the generated crate"
    cargo clippy --quiet --all-targets -- -D warnings || fail "$name: cargo clippy found problems"
    RUSTDOCFLAGS="-D warnings" cargo doc --quiet --no-deps || fail "$name: cargo doc found problems"
    cargo build --quiet --target wasm32-wasip2 || fail "$name: cargo build --target wasm32-wasip2 failed"
  )
  WASM_TEMPLATE_PLUGIN="$CARGO_TARGET_DIR/wasm32-wasip2/debug/wasm_acme.wasm" \
    cargo test --quiet --locked -p mapper-wasm --test template \
    || fail "$name: the generated plugin does not work in mapper-wasm"
  echo "ok: $name"
}
start=$(date +%s)
check_wasm
echo "templates/wasm-driver: renders, builds for wasm32-wasip2, passes its tests, clippy, rustfmt and rustdoc, runs in mapper-wasm ($(($(date +%s) - start)) s)"
