#!/usr/bin/env bash
# Runs an edge node with simulated devices: edgecore-dmi, mapper-virtual and
# mapper-modbus (against the Modbus simulator), the example Device/DeviceModel
# YAML from examples/devices, and a live twin table. Everything lives in a
# temporary directory; Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
echo "building (first time takes a few minutes)..."
cargo build --quiet --bin edgecore-dmi --bin mapper-virtual --bin mapper-modbus --bin modbus-sim

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

# The Modbus simulator on a free port; the boiler's YAML copy points at it.
sed 's/127.0.0.1:15020/127.0.0.1:0/' examples/modbus/plant-sim.yaml >"$WORK/plant-sim.yaml"
./target/debug/modbus-sim --config "$WORK/plant-sim.yaml" >"$WORK/logs/modbus-sim.out" 2>"$WORK/logs/modbus-sim.log" &
PIDS+=($!)
for _ in $(seq 50); do grep -q '^READY boiler' "$WORK/logs/modbus-sim.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(sed -n 's/^READY boiler tcp 127.0.0.1:\([0-9]*\)$/\1/p' "$WORK/logs/modbus-sim.out")
[ -n "$PORT" ] || { echo "modbus-sim did not start; see $WORK/logs" >&2; exit 1; }
sed -i "s/port: 15020/port: $PORT/" "$WORK/devices/boiler.yaml"

./target/debug/edgecore-dmi --dmi-socket "$WORK/dmi.sock" serve \
  --state-dir "$WORK/state" --devices-dir "$WORK/devices" >"$WORK/logs/edgecore-dmi.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$WORK/dmi.sock" ] && break; sleep 0.1; done
./target/debug/mapper-virtual --config-file examples/config/virtual-mapper.yaml \
  --socket-path "$WORK/virtual.sock" --edgecore-sock "$WORK/dmi.sock" >"$WORK/logs/mapper-virtual.log" 2>&1 &
PIDS+=($!)
./target/debug/mapper-modbus --config-file examples/config/modbus-mapper.yaml \
  --socket-path "$WORK/modbus.sock" --edgecore-sock "$WORK/dmi.sock" >"$WORK/logs/mapper-modbus.log" 2>&1 &
PIDS+=($!)

cat <<MSG
edge node running in $WORK
  device YAML:  $WORK/devices   (edit a desired value, e.g. setpoint in thermostat.yaml or boiler.yaml)
  Modbus sim:   127.0.0.1:$PORT  (try: mbpoll -m tcp -a 1 -r 11 -c 1 -t 4 -1 -p $PORT 127.0.0.1)
  logs:         $WORK/logs
  inspect:      ./target/debug/edgecore-dmi --dmi-socket $WORK/dmi.sock devices -o json
Ctrl-C stops everything.
MSG
sleep 2
./target/debug/edgecore-dmi --dmi-socket "$WORK/dmi.sock" devices --watch
