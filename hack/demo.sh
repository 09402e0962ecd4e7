#!/usr/bin/env bash
# Runs an edge node with simulated devices: edgecore-dmi, mapper-virtual,
# mapper-modbus (against the Modbus simulator), mapper-opcua (against the OPC-UA
# simulator serving a press, examples/opcua) and, when socat and python3 are
# installed, mapper-serial (against a scripted scale on a socat PTY pair,
# hack/serial-sim/scale.py), the example Device/DeviceModel YAML from
# examples/devices, examples/opcua/plant.yaml (and examples/serial/scale.yaml),
# and a live twin table.
# Everything lives in a temporary directory; Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
if ! command -v cc >/dev/null || ! command -v make >/dev/null; then
  echo "a C compiler and make are needed (jemalloc, ring): apt-get install build-essential" >&2
  exit 1
fi
echo "building (first time takes a few minutes)..."
cargo build --quiet --bin edgecore-dmi --bin mapper-virtual --bin mapper-modbus --bin mapper-serial --bin modbus-sim \
  --bin mapper-opcua --bin opcua-sim

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

# The OPC-UA simulator (a press) on a free port; the press devices' YAML copy
# points at it. Its first start makes a server certificate (a few seconds).
./target/debug/opcua-sim --config examples/opcua/plant-sim.yaml --port 0 --pki-dir "$WORK/opcua-sim-pki" \
  >"$WORK/logs/opcua-sim.out" 2>"$WORK/logs/opcua-sim.log" &
PIDS+=($!)
for _ in $(seq 600); do grep -q '^READY ' "$WORK/logs/opcua-sim.out" 2>/dev/null && break; sleep 0.1; done
OPCUA_PORT=$(sed -n 's|^READY opc.tcp://127.0.0.1:\([0-9]*\)/ .*$|\1|p' "$WORK/logs/opcua-sim.out")
[ -n "$OPCUA_PORT" ] || { echo "opcua-sim did not start; see $WORK/logs" >&2; exit 1; }
sed "s|opc.tcp://127.0.0.1:14840/|opc.tcp://127.0.0.1:$OPCUA_PORT/|" examples/opcua/plant.yaml >"$WORK/devices/press.yaml"

# The serial scale: a socat PTY pair in the work dir, the scripted scale on one
# end, the example Device YAML's serialPort pointed at the other.
SERIAL=""
if command -v socat >/dev/null && command -v python3 >/dev/null; then
  mkdir -p "$WORK/tty"
  socat "pty,raw,echo=0,link=$WORK/tty/dev" "pty,raw,echo=0,link=$WORK/tty/scale" 2>"$WORK/logs/socat.log" &
  PIDS+=($!)
  for _ in $(seq 50); do [ -e "$WORK/tty/dev" ] && [ -e "$WORK/tty/scale" ] && break; sleep 0.1; done
  python3 hack/serial-sim/scale.py --port "$WORK/tty/scale" >"$WORK/logs/scale.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do grep -q '^READY' "$WORK/logs/scale.log" 2>/dev/null && break; sleep 0.1; done
  if grep -q '^READY' "$WORK/logs/scale.log" 2>/dev/null; then
    sed "s|serialPort: /dev/ttyUSB0|serialPort: $WORK/tty/dev|" examples/serial/scale.yaml >"$WORK/devices/scale.yaml"
    SERIAL="$WORK/tty/dev"
  else
    echo "serial scale did not start (see $WORK/logs/scale.log); skipping the serial device" >&2
  fi
else
  echo "socat or python3 not found: skipping the serial device (scale on a PTY pair)"
fi

./target/debug/edgecore-dmi --dmi-socket "$WORK/dmi.sock" serve \
  --state-dir "$WORK/state" --devices-dir "$WORK/devices" >"$WORK/logs/edgecore-dmi.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$WORK/dmi.sock" ] && break; sleep 0.1; done
PANEL_PORT=${PANEL_PORT:-7777}
./target/debug/mapper-virtual --config-file examples/config/virtual-mapper.yaml --http-port "$PANEL_PORT" \
  --socket-path "$WORK/virtual.sock" --edgecore-sock "$WORK/dmi.sock" >"$WORK/logs/mapper-virtual.log" 2>&1 &
PIDS+=($!)
./target/debug/mapper-modbus --config-file examples/config/modbus-mapper.yaml \
  --socket-path "$WORK/modbus.sock" --edgecore-sock "$WORK/dmi.sock" >"$WORK/logs/mapper-modbus.log" 2>&1 &
PIDS+=($!)
./target/debug/mapper-opcua --config-file examples/config/opcua-mapper.yaml --state-dir "$WORK/opcua-state" \
  --socket-path "$WORK/opcua.sock" --edgecore-sock "$WORK/dmi.sock" >"$WORK/logs/mapper-opcua.log" 2>&1 &
PIDS+=($!)
if [ -n "$SERIAL" ]; then
  ./target/debug/mapper-serial --config-file examples/config/serial-mapper.yaml \
    --socket-path "$WORK/serial.sock" --edgecore-sock "$WORK/dmi.sock" >"$WORK/logs/mapper-serial.log" 2>&1 &
  PIDS+=($!)
fi

cat <<MSG
edge node running in $WORK
  device YAML:  $WORK/devices   (edit a desired value, e.g. setpoint in thermostat.yaml or boiler.yaml)
  Modbus sim:   127.0.0.1:$PORT  (try: mbpoll -m tcp -a 1 -r 11 -c 1 -t 4 -1 -p $PORT 127.0.0.1)
  OPC-UA sim:   opc.tcp://127.0.0.1:$OPCUA_PORT/  (press-1, press-1-live in press.yaml; try:
                ./target/debug/mapper-opcua browse --url opc.tcp://127.0.0.1:$OPCUA_PORT/ --state-dir $WORK/opcua-state)
  serial scale: ${SERIAL:-skipped (needs socat and python3)}${SERIAL:+  (scale-1 on a PTY: W -> ST,GS,+0012.34kg; edit filter in scale.yaml)}
  data panel:   curl -s 127.0.0.1:$PANEL_PORT/api/v1/device/default/thermostat-1/temperature
                curl -s -X PUT 127.0.0.1:$PANEL_PORT/api/v1/devicemethod/default/thermostat-1/setTemperature/setpoint/24
  logs:         $WORK/logs
  inspect:      ./target/debug/edgecore-dmi --dmi-socket $WORK/dmi.sock devices -o json
Ctrl-C stops everything.
MSG
sleep 2
./target/debug/edgecore-dmi --dmi-socket "$WORK/dmi.sock" devices --watch
