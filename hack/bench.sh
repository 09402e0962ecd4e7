#!/usr/bin/env bash
# Runs the benchmark suite on release builds and prints the results table,
# then the criterion micro-benchmarks. Every figure comes with a baseline
# measured in the same run; see benches/README.md.
#   bash hack/bench.sh            # ~25 minutes on 2 cores (after the release build)
#   bash hack/bench.sh --quick    # ~3 minutes
#   bash hack/bench.sh --seconds 20 --devices 16   # other scales
#   bash hack/bench.sh --only sinks                # one group (modbus, write, dmi, memory, startup,
#                                                  # cloud, scale, sinks, serial, ble, wasm, opcua)
#   bash hack/bench.sh --only scale --plot benches/scale.svg   # redraw the committed scale plot
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building release binaries (first time: several minutes)..." >&2
cargo build --release --locked --quiet -p dmi-bench -p edgecore-dmi -p mapper-modbus -p modbus-sim -p mapper-serial -p mapper-ble -p mapper-virtual -p mapper-opcua -p opcua-sim --bins
# The WebAssembly group runs the plugins in target/plugins, built for release.
PROFILE=release bash hack/build-plugins.sh >/dev/null \
  || echo "WebAssembly plugins not built (needs: rustup target add wasm32-wasip2); the wasm group says so" >&2
./target/release/bench-suite "$@"
# The criterion micro-benchmarks run with the whole suite, not with --quick or --only.
if [[ " $* " != *" --quick "* && " $* " != *" --only"* ]]; then
  cargo bench --locked --quiet -p dmi-bench --bench micro -- --noplot 2>/dev/null | grep -E "^[a-z].*time:|time:" || true
fi
