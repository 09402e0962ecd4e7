#!/usr/bin/env bash
# Sets up what the tests need (idempotent) and runs the whole check suite:
# formatting, clippy, layering, build, unit + end-to-end + interop tests.
#   bash hack/test.sh            # everything
#   SKIP_LINT=1 bash hack/test.sh  # tests only
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

# Each stage line ends with the free space under target/: a clean build of
# everything below needs about 10 GiB.
log() { printf '\n==> %s  [%s free]\n' "$*" "$(df -h --output=avail "$ROOT" 2>/dev/null | tail -1 | tr -d ' ')"; }

# --- set-up -----------------------------------------------------------------
log "set-up"
bash hack/setup-test-env.sh

# --- lint -------------------------------------------------------------------
if [ -z "${SKIP_LINT:-}" ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy (all targets, warnings are errors; default, all and no default features)"
  cargo clippy --workspace --all-targets --locked -- -D warnings
  cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
  cargo clippy -p edgecore-dmi -p mapper-sdk --all-targets --no-default-features --locked -- -D warnings
  log "edgecore-dmi builds without the kubernetes feature"
  cargo build -p edgecore-dmi --no-default-features --locked
  log "cargo doc (warnings are errors)"
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
  log "layering: drivers never depend on gRPC, protobuf or Kubernetes"
  bash hack/check-layering.sh
  log "supply chain: cargo deny (licenses, bans incl. layering, sources; advisories when reachable)"
  bash hack/deny.sh
fi

# --- tests ------------------------------------------------------------------
# One build of every target with one feature resolution (dev-dependencies
# included), so the binaries the end-to-end tests start, the test harnesses
# and the benchmarks share their dependencies' artifacts instead of building
# them twice.
log "build binaries used by the end-to-end tests, the tests and the benchmarks"
cargo build --workspace --all-targets --locked
log "WebAssembly guest crates: rustfmt, clippy, tests; the plugins the mapper-wasm and end-to-end tests use (hack/build-plugins.sh)"
bash hack/build-plugins.sh --check
log "tests"
export DMI_TEST_PYTHON="$ROOT/target/test-env/venv/bin/python"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi
if [ -n "${DMI_PRUNE_TEST_BINARIES:-}" ]; then
  # CI: the test harnesses (about 5 GiB) are not needed by the stages below;
  # removing them leaves room for the template crates' own build.
  cargo test --workspace --locked --no-run --message-format json 2>/dev/null |
    "$DMI_TEST_PYTHON" hack/remove-test-binaries.py
fi
log "templates/mapper: rendered with cargo-generate, the generated crates' tests and clippy (hack/check-template.sh)"
bash hack/check-template.sh
log "benchmark suite, quick and on debug builds (checks that it runs; numbers are not judged)"
# Built by the workspace build above (the same features; `-p dmi-bench` alone
# would resolve them differently and rebuild the dependencies).
./target/debug/bench-suite --quick
log "criterion micro-benchmarks, one iteration each"
cargo test --workspace --locked --quiet --benches
if [ -z "${SKIP_FUZZ:-}" ]; then
  log "fuzzing the untrusted-input decoders, ${FUZZ_SECONDS:-20} s each (hack/fuzz.sh; SKIP_FUZZ=1 skips)"
  FUZZ_SECONDS=${FUZZ_SECONDS:-20} FUZZ_SANITIZER=${FUZZ_SANITIZER:-none} bash hack/fuzz.sh
fi
log "all checks passed"
