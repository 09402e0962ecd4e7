#!/usr/bin/env bash
# Fuzzes the decoders that take untrusted input (the cargo-fuzz project in
# fuzz/, see fuzz/README.md): installs what it needs (nightly, cargo-fuzz),
# builds every target once, then runs each for a bounded time over its
# committed seed corpus in fuzz/corpus/<target>/. New corpus entries go to a
# temporary directory, never into the repository. Exits non-zero if any target
# crashed or hung, printing the artifact path and its bytes.
#   bash hack/fuzz.sh                           # every target, 60 s each
#   FUZZ_SECONDS=300 bash hack/fuzz.sh          # longer
#   FUZZ_TARGETS="yaml_source config_data" bash hack/fuzz.sh
#   FUZZ_SANITIZER=none bash hack/fuzz.sh       # no ASan: faster builds and runs (the code is safe Rust)
#   FUZZ_KEEP_CORPUS=DIR bash hack/fuzz.sh      # keep what the run found, one folder per target, in DIR
#   FUZZ_MAX_LEN=65536 bash hack/fuzz.sh        # longer inputs (default 4096 bytes)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

SECONDS_PER_TARGET=${FUZZ_SECONDS:-60}
SANITIZER=${FUZZ_SANITIZER:-address}
# Longest input libFuzzer generates. Without it the longest seed decides (42
# bytes for modbus_decode), which would keep longer inputs from ever being tried.
MAX_LEN=${FUZZ_MAX_LEN:-4096}
FUZZ=(cargo +nightly fuzz)

log() { printf '\n==> %s\n' "$*"; }
since() { echo "$(($(date +%s) - $1)) s"; }

# --- set-up -----------------------------------------------------------------
t0=$(date +%s)
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  log "installing the nightly toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! "${FUZZ[@]}" --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
log "set-up done in $(since "$t0") ($(rustup run nightly rustc --version), $("${FUZZ[@]}" --version))"

if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <("${FUZZ[@]}" list --fuzz-dir fuzz)
fi

# --- build ------------------------------------------------------------------
# One build for all targets; `fuzz run` below uses the same flags, so it finds
# everything built. The first build compiles the dependency tree with
# coverage instrumentation (several minutes on 2 cores).
t0=$(date +%s)
log "building ${targets[*]} (sanitizer: $SANITIZER)"
"${FUZZ[@]}" build --fuzz-dir fuzz --sanitizer "$SANITIZER"
log "build done in $(since "$t0")"

# --- run --------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
  seeds=fuzz/corpus/$t
  mkdir -p "$work/$t" "$seeds"
  log "fuzzing $t for $SECONDS_PER_TARGET s ($(find "$seeds" -type f | wc -l) seeds in $seeds)"
  t0=$(date +%s)
  status=0
  # The first corpus directory receives new entries; the seeds are only read.
  "${FUZZ[@]}" run --fuzz-dir fuzz --sanitizer "$SANITIZER" "$t" "$work/$t" "$seeds" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=1024 -max_len="$MAX_LEN" -print_final_stats=1 \
    >"$work/$t.log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -1)
  cov=$(grep -oE '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$work/$t.log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
  found=$(find "$work/$t" -type f | wc -l)
  if [ "$status" -eq 0 ]; then
    line="$t: ok, ${runs:-?} executions in $(since "$t0"), ${cov:-no coverage line}, $found new corpus entries"
  else
    line="$t: FAILED (exit $status) after ${runs:-?} executions in $(since "$t0")"
    failed+=("$t")
    # What libFuzzer said about it, and where the input is.
    grep -A1 -E "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY:|==ERROR|timeout after|out-of-memory" "$work/$t.log" | head -20 || true
    for a in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$work/$t.log"); do
      echo "artifact: $a"
      echo "  bytes (hex): $(od -An -v -tx1 "$a" | tr -d ' \n' | head -c 2000)"
      echo "  reproduce:   cargo +nightly fuzz run --fuzz-dir fuzz $t $a"
      line="$line; artifact $a"
    done
    echo "full log (kept): fuzz/artifacts/$t/last-run.log"
    mkdir -p "fuzz/artifacts/$t"
    cp "$work/$t.log" "fuzz/artifacts/$t/last-run.log"
  fi
  echo "$line"
  summary+=("$line")
  if [ -n "${FUZZ_KEEP_CORPUS:-}" ] && [ "$found" -gt 0 ]; then
    mkdir -p "$FUZZ_KEEP_CORPUS/$t"
    cp "$work/$t"/* "$FUZZ_KEEP_CORPUS/$t/"
  fi
done

log "summary"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "crashed or hung: ${failed[*]} (artifacts under fuzz/artifacts/)" >&2
  exit 1
fi
