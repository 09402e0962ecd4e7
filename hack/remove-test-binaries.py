"""Removes the test harness executables named in `cargo test --no-run
--message-format json` output (stdin) and prints how much space that freed.
Used by hack/test.sh in CI (DMI_PRUNE_TEST_BINARIES=1) once the tests ran."""
import json
import os
import sys

freed = 0
count = 0
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    exe = msg.get("executable")
    if msg.get("reason") != "compiler-artifact" or not msg.get("profile", {}).get("test") or not exe:
        continue
    if os.path.exists(exe):
        freed += os.path.getsize(exe)
        count += 1
        os.remove(exe)
print(f"removed {count} test harnesses, {freed / 2**30:.1f} GiB")
