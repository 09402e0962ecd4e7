#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (policy: deny.toml). Installs cargo-deny
# when missing (a source build, about 2.5 min on 2 cores).
#
# licenses, bans (including the layering bans) and sources run offline and
# always. advisories needs the RustSec database from github.com: it runs when
# the database can be fetched (or is already in ~/.cargo/advisory-dbs) and is
# reported as SKIPPED, loudly, when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deny --version >/dev/null 2>&1; then
  echo "installing cargo-deny"
  cargo install --locked --quiet cargo-deny@0.20.2
fi
cargo deny --version

# --offline needs every crate in Cargo.lock, for every platform, in the local
# registry; a build downloads only the host's.
cargo fetch --locked --quiet
cargo deny --offline --log-level warn check licenses bans sources
if timeout 120 cargo deny --log-level error fetch db >/dev/null 2>&1 \
  || ls -d "${CARGO_HOME:-$HOME/.cargo}"/advisory-dbs/*/ >/dev/null 2>&1; then
  cargo deny --offline --log-level warn check advisories
else
  echo "SKIPPED: cargo deny check advisories (the RustSec database at github.com cannot be fetched from this machine)"
fi
