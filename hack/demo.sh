#!/usr/bin/env bash
# Runs an edge node with simulated devices: edgecore-dmi + mapper-virtual, the
# example Device/DeviceModel YAML from examples/devices, and a live twin table.
# Everything lives in a temporary directory; Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
echo "building (first time takes a few minutes)..."
cargo build --quiet --bin edgecore-dmi --bin mapper-virtual

WORK=$(mktemp -d -t edge-dmi-demo.XXXXXX)
mkdir -p "$WORK/devices" "$WORK/logs"
cp examples/devices/*.yaml "$WORK/devices/"
PIDS=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo
  echo "stopped; logs and state are in $WORK"
}
trap cleanup INT TERM EXIT

./target/debug/edgecore-dmi --dmi-socket "$WORK/dmi.sock" serve \
  --state-dir "$WORK/state" --devices-dir "$WORK/devices" >"$WORK/logs/edgecore-dmi.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$WORK/dmi.sock" ] && break; sleep 0.1; done
./target/debug/mapper-virtual --config-file examples/config/virtual-mapper.yaml \
  --socket-path "$WORK/virtual.sock" --edgecore-sock "$WORK/dmi.sock" >"$WORK/logs/mapper-virtual.log" 2>&1 &
PIDS+=($!)

cat <<MSG
edge node running in $WORK
  device YAML:  $WORK/devices   (edit a desired value, e.g. setpoint in thermostat.yaml)
  logs:         $WORK/logs
  inspect:      ./target/debug/edgecore-dmi --dmi-socket $WORK/dmi.sock devices -o json
Ctrl-C stops everything.
MSG
sleep 2
./target/debug/edgecore-dmi --dmi-socket "$WORK/dmi.sock" devices --watch
