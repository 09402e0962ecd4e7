#!/usr/bin/env python3
"""An independent Modbus server (pymodbus) serving a register map given as JSON.

  pymodbus_server.py --map map.json --tcp PORT
  pymodbus_server.py --map map.json --rtu /path/to/pty [--baud 9600]

The map is {"holding": [[address, [words...]], ...], "input": ..., "coils": ..., "discrete": ...}
with 0-based protocol addresses. Prints READY once the server is about to serve.
"""
import argparse
import asyncio
import json
import logging

from pymodbus import FramerType
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer

SIZE = 200


def table(entries, bits=False):
    values = [False if bits else 0] * SIZE
    for address, words in entries:
        for i, w in enumerate(words):
            values[address + i] = bool(w) if bits else w
    # ModbusDeviceContext adds 1 to protocol addresses: a block starting at 1
    # makes protocol address 0 = values[0].
    return ModbusSequentialDataBlock(1, values)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--map", required=True)
    ap.add_argument("--tcp", type=int)
    ap.add_argument("--rtu")
    ap.add_argument("--baud", type=int, default=9600)
    ap.add_argument("--unit", type=int, default=1)
    args = ap.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.ERROR)
    with open(args.map) as f:
        m = json.load(f)
    device = ModbusDeviceContext(
        hr=table(m.get("holding", [])), ir=table(m.get("input", [])),
        co=table(m.get("coils", []), True), di=table(m.get("discrete", []), True))
    context = ModbusServerContext(devices={args.unit: device}, single=False)

    async def ready():
        await asyncio.sleep(0.3)
        print("READY", flush=True)

    asyncio.ensure_future(ready())
    if args.tcp is not None:
        await StartAsyncTcpServer(context=context, address=("127.0.0.1", args.tcp))
    else:
        await StartAsyncSerialServer(context=context, framer=FramerType.RTU, port=args.rtu, baudrate=args.baud)


if __name__ == "__main__":
    asyncio.run(main())
