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
    # The WebAssembly plugin host is the one mapper that embeds wasmtime.
    [ "$crate" = mapper-wasm ] && [ "$banned" = wasmtime ] && continue
    if echo "$direct" | grep -qx "$banned"; then
      echo "layering violation: $crate depends directly on $banned" >&2
      fail=1
    fi
  done
done
# Whole trees: the SDK and drivers never pull in Kubernetes; the CRD types never gRPC.
tree_bans() {
  local crate=$1; shift
  local all
  all=$(cargo tree -p "$crate" -e normal --prefix none --locked 2>/dev/null | awk '{print $1}')
  for banned in "$@"; do
    if echo "$all" | grep -qx "$banned"; then
      echo "layering violation: $crate pulls in $banned" >&2
      fail=1
    fi
  done
}
tree_bans device-crds tonic
tree_bans mapper-sdk kube k8s-openapi
# The shared runtime support is below everything: no protocol, DMI or Kubernetes.
tree_bans edge-rt tonic prost dmi-proto kube k8s-openapi device-crds
for manifest in mappers/*/Cargo.toml; do
  tree_bans "$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -1)" kube k8s-openapi
done
[ $fail = 0 ] && echo "layering ok"
exit $fail
