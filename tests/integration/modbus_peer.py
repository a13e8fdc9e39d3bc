"""A real pymodbus TCP server for integration tests, run as its own process.

Serves unit ids 1..N; holding register 0 of every unit counts up every 10 ms, so every poll sees a
new value. Prints the port it listens on, then serves until killed.

    python tests/integration/modbus_peer.py --units 10
"""

from __future__ import annotations

import argparse
import asyncio
import socket

from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusTcpServer


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--units", type=int, default=4)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    port = args.port
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    blocks = {u: ModbusSequentialDataBlock(0, [0] * 16) for u in range(1, args.units + 1)}
    devices = {u: ModbusDeviceContext(hr=b) for u, b in blocks.items()}
    server = ModbusTcpServer(ModbusServerContext(devices=devices, single=False), address=("127.0.0.1", port))

    async def count() -> None:
        n = 0
        while True:
            n = (n + 1) % 65536
            for b in blocks.values():
                b.setValues(1, [n])  # pymodbus data blocks are 1-based internally
            await asyncio.sleep(0.01)

    counter = asyncio.create_task(count())
    print(port, flush=True)
    try:
        await server.serve_forever()
    finally:
        counter.cancel()


if __name__ == "__main__":
    asyncio.run(main())
