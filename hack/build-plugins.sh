#!/usr/bin/env bash
# Builds the WebAssembly guest crates (mappers/wasm/guest and the example
# plugins in mappers/wasm/plugins) for wasm32-wasip2 and copies the plugins
# to target/plugins/*.wasm, where the tests and the benchmarks find them.
#   bash hack/build-plugins.sh            # debug build (what the tests use)
#   PROFILE=release bash hack/build-plugins.sh
#   bash hack/build-plugins.sh --check   # first rustfmt, clippy (host and wasm32) and the
#                                        # unit tests of the guest crates (what hack/test.sh runs)
# Needs the wasm32-wasip2 target (hack/setup-test-env.sh adds it).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-debug}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
flags=()
[ "$PROFILE" = release ] && flags+=(--release)
MANIFEST=mappers/wasm/plugins/Cargo.toml
if [ "${1:-}" = --check ]; then
  cargo fmt --manifest-path "$MANIFEST" --all -- --check
  for target in "" wasm32-wasip2; do
    cargo clippy --manifest-path "$MANIFEST" --workspace --all-targets --locked \
      --target-dir "$TARGET_DIR" ${target:+--target "$target"} -- -D warnings
  done
  cargo test --manifest-path "$MANIFEST" --workspace --locked --quiet --target-dir "$TARGET_DIR"
  RUSTDOCFLAGS="-D warnings" cargo doc --manifest-path "$MANIFEST" --workspace --no-deps \
    --locked --quiet --target-dir "$TARGET_DIR"
fi
cargo build --manifest-path "$MANIFEST" --workspace --locked \
  --target wasm32-wasip2 --target-dir "$TARGET_DIR" "${flags[@]}"
mkdir -p "$TARGET_DIR/plugins"
for crate in mappers/wasm/plugins/*/Cargo.toml; do
  name=$(sed -n 's/^name = "\(.*\)"/\1/p' "$crate" | head -1 | tr - _)
  cp "$TARGET_DIR/wasm32-wasip2/$PROFILE/$name.wasm" "$TARGET_DIR/plugins/$name.wasm.tmp"
  # Rename into place: a running mapper's reload watcher never sees half a file.
  mv "$TARGET_DIR/plugins/$name.wasm.tmp" "$TARGET_DIR/plugins/$name.wasm"
  echo "target/plugins/$name.wasm"
done
