#!/usr/bin/env bash
# Installs what the tests need, idempotently: socat and mbpoll, mosquitto,
# redis-server, MariaDB and VictoriaMetrics, rustfmt/clippy, and a Python venv in target/test-env/venv with
# grpcio (the out-of-Rust DMI peer) and pymodbus (an independent Modbus server).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

if ! command -v python3 >/dev/null; then apt_install python3 python3-venv; fi
# Native build tools: a C compiler, and make for jemalloc (edgecore-dmi's
# allocator, tikv-jemalloc-sys runs its configure and make).
command -v cc >/dev/null && command -v make >/dev/null || apt_install build-essential
# Modbus peers: socat (virtual serial lines), mbpoll (a real Modbus client CLI).
apt_install socat mbpoll
# Data-plane peers (sink and MQTT bridge tests): an MQTT broker and its CLI
# clients, Redis, MariaDB, and VictoriaMetrics (takes InfluxDB line protocol).
# The tests start their own instances on free loopback ports.
apt_install mosquitto mosquitto-clients redis-server mariadb-server mariadb-client victoria-metrics
# BLE: the system libdbus that btleplug links (mapper-ble), and the D-Bus daemon and
# python-dbusmock that ../shared/tools/ble-mock runs a mock BlueZ with.
apt_install libdbus-1-dev dbus python3-dbusmock
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then apt_install python3-venv; fi

rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2  # mapper-wasm plugins
for comp in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^$comp"; then
    rustup component add "$comp"
  fi
done

VENV=target/test-env/venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import grpc, grpc_tools, pymodbus, serial, asyncua' >/dev/null 2>&1; then
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    'grpcio>=1.60,<2' 'grpcio-tools>=1.60,<2' 'pymodbus>=3.10,<3.17' 'pyserial>=3.5,<4' 'asyncua>=2.1,<3'
fi
# Dashboard browser test (tests/dashboard.rs): Debian's Chromium, driven by
# playwright-core (version pinned in tests/browser/package-lock.json; it
# downloads no browser) installed into target/test-env/node with npm.
apt_install chromium
if ! command -v npm >/dev/null; then apt_install nodejs npm; fi
NODE_ENV_DIR=target/test-env/node
if ! cmp -s tests/browser/package-lock.json "$NODE_ENV_DIR/package-lock.json" \
  || [ ! -f "$NODE_ENV_DIR/node_modules/playwright-core/package.json" ]; then
  mkdir -p "$NODE_ENV_DIR"
  cp tests/browser/package.json tests/browser/package-lock.json "$NODE_ENV_DIR/"
  (cd "$NODE_ENV_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
echo "test environment ready ($VENV)"
