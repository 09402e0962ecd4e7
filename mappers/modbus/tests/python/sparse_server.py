#!/usr/bin/env python3
"""A pymodbus server whose register tables have holes, as many real devices do:
only the listed registers exist, and any request touching another address is
answered with exception 2 (IllegalDataAddress). Built on pymodbus's SimDevice,
which marks every register it was not given as invalid.

  sparse_server.py --map map.json --tcp PORT

The map is {"holding": [[address, [words...]], ...], "input": ..., "coils":
[[address, [0/1...]], ...], "discrete": ...} with 0-based protocol addresses.
Bit tables are whole from their first listed address to the end of the last
listed 16-bit word; past that, requests get exception 2 too. Every table needs
at least one entry. Prints READY once the server is about to serve.
"""
import argparse
import asyncio
import json
import logging

from pymodbus.server import StartAsyncTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def registers(entries):
    return [SimData(a, values=list(words), datatype=DataType.REGISTERS) for a, words in entries]


def bits(entries):
    return [SimData(a, values=[bool(b) for b in vals], datatype=DataType.BITS) for a, vals in entries]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--map", required=True)
    ap.add_argument("--tcp", type=int, required=True)
    ap.add_argument("--unit", type=int, default=1)
    args = ap.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    with open(args.map) as f:
        m = json.load(f)
    device = SimDevice(
        args.unit,
        simdata=(bits(m["coils"]), bits(m["discrete"]), registers(m["holding"]), registers(m["input"])),
    )

    async def ready():
        await asyncio.sleep(0.3)
        print("READY", flush=True)

    asyncio.ensure_future(ready())
    await StartAsyncTcpServer(device, address=("127.0.0.1", args.tcp))


if __name__ == "__main__":
    asyncio.run(main())
