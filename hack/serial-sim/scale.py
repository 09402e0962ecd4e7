#!/usr/bin/env python3
"""A bench scale on a serial line, for the demo and the serial benchmark.

Opens one end of a PTY pair (socat) and answers, per request line:
  W\\r\\n     -> ST,GS,+0012.34kg\\r\\n  (stable, gross; the weight drifts)
  F?\\r\\n    -> F=3\\r\\n               (filter level)
  F<n>\\r\\n  -> OK\\r\\n for 0..9, else ERR\\r\\n (sets the filter level)
anything else -> ?\\r\\n
Plain Python 3 standard library (no pyserial).

  scale.py --port PATH [--drift 0.05] [--count FILE]

With --count, the number of requests answered is written to FILE every
--count-every seconds and on exit (SIGTERM/SIGINT), as one integer.
"""
import argparse
import os
import random
import select
import signal
import sys
import tty

ap = argparse.ArgumentParser()
ap.add_argument("--port", required=True, help="the PTY end to serve")
ap.add_argument("--drift", type=float, default=0.05,
                help="largest weight change per answer, kg (0: constant 12.34)")
ap.add_argument("--count", help="file to write the number of answers to")
ap.add_argument("--count-every", type=float, default=0.5)
a = ap.parse_args()

fd = os.open(a.port, os.O_RDWR | os.O_NOCTTY)
tty.setraw(fd)
answered = 0


def write_count():
    if a.count:
        tmp = a.count + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % answered)
        os.replace(tmp, a.count)


def stop(*_):
    write_count()
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
print("READY", a.port, flush=True)

weight = 12.34
filt = 3
buf = b""
timeout = a.count_every if a.count else None
while True:
    r, _, _ = select.select([fd], [], [], timeout)
    if not r:
        write_count()
        continue
    try:
        data = os.read(fd, 4096)
    except OSError:
        stop()
    if not data:
        stop()
    buf += data
    out = []
    while b"\r\n" in buf:
        line, buf = buf.split(b"\r\n", 1)
        answered += 1
        if line == b"W":
            if a.drift:
                weight = min(99.0, max(0.0, weight + random.uniform(-a.drift, a.drift)))
            out.append(b"ST,GS,%+08.2fkg\r\n" % weight)
        elif line == b"F?":
            out.append(b"F=%d\r\n" % filt)
        elif line[:1] == b"F" and line[1:].isdigit() and int(line[1:]) <= 9:
            filt = int(line[1:])
            out.append(b"OK\r\n")
        elif line[:1] == b"F":
            out.append(b"ERR\r\n")
        else:
            out.append(b"?\r\n")
    if out:
        os.write(fd, b"".join(out))
