#!/usr/bin/env bash
# DESIGN.md: mappers/* → mapper-sdk → dmi-proto. A driver crate never depends
# directly on tonic, prost, kube or the DMI types.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
for manifest in mappers/*/Cargo.toml; do
  crate=$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -1)
  direct=$(cargo tree -p "$crate" -e normal --depth 1 --prefix none --locked 2>/dev/null | awk '{print $1}')
  for banned in tonic prost dmi-proto kube wasmtime; do
    if echo "$direct" | grep -qx "$banned"; then
      echo "layering violation: $crate depends directly on $banned" >&2
      fail=1
    fi
  done
done
for banned in tonic kube; do
  if cargo tree -p device-crds -e normal --prefix none --locked 2>/dev/null | awk '{print $1}' | grep -qx "$banned"; then
    echo "layering violation: device-crds pulls in $banned" >&2
    fail=1
  fi
done
[ $fail = 0 ] && echo "layering ok"
exit $fail
