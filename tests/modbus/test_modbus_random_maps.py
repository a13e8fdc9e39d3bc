"""End to end on random register maps: pymodbus encodes, the planner merges, the driver decodes.

Hundreds of random devices (types, orders, addresses, gaps, bits, limits) are read from a real
pymodbus server through one driver; every value must come back exactly as pymodbus encoded it.
"""

from __future__ import annotations

import random
import struct
from typing import Any

from modbus_support import LOCATION, BankServer, device_model, tcp_bus
from pymodbus.client.mixin import ModbusClientMixin

from citynerve.drivers.modbus.config import REGISTERS_OF_TYPE
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import shortest_float32

DT = ModbusClientMixin.DATATYPE
ORACLE = {
    "int16": DT.INT16,
    "uint16": DT.UINT16,
    "int32": DT.INT32,
    "uint32": DT.UINT32,
    "int64": DT.INT64,
    "uint64": DT.UINT64,
    "float32": DT.FLOAT32,
    "float64": DT.FLOAT64,
}
RANGES = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def random_value(rng: random.Random, type_: str) -> Any:
    if type_ in RANGES:
        lo, hi = RANGES[type_]
        return rng.choice([lo, hi, 0, rng.randint(lo, hi)])
    if type_ == "float32":
        # a float32 reads back as the shortest decimal naming it (citynerve.gateway.api.shortest_float32)
        return shortest_float32(struct.unpack(">f", struct.pack(">f", rng.uniform(-1e6, 1e6)))[0])
    if type_ == "float64":
        return rng.uniform(-1e12, 1e12)
    return "".join(rng.choice("ABCXYZ0189-") for _ in range(rng.randint(0, 8)))


def oracle_registers(point: dict[str, Any], value: Any) -> list[int]:
    type_ = point["type"]
    if type_ == "string":
        regs = ModbusClientMixin.convert_to_registers(value, DT.STRING) if value else []
        regs = (regs + [0] * point["length"])[: point["length"]]
        if point["word_order"] == "little":
            regs.reverse()
    else:
        regs = ModbusClientMixin.convert_to_registers(value, ORACLE[type_], point["word_order"])
    if point["byte_order"] == "little":
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    return regs


def random_device(rng: random.Random, unit: int, bank: Any) -> tuple[Any, dict[str, Any]]:
    points: dict[str, dict[str, Any]] = {}
    expected: dict[str, Any] = {}
    cursor = {"holding": rng.randint(0, 50), "input": rng.randint(0, 50), "coil": rng.randint(0, 50)}
    for i in range(rng.randint(1, 14)):
        table = rng.choice(["holding", "holding", "input", "coil"])
        name = f"p{i}"
        if table == "coil":
            address = cursor["coil"]
            cursor["coil"] += rng.randint(1, 200)
            value = rng.random() < 0.5
            points[name] = {"table": "coil", "address": address, "writable": True}
            bank.put("coil", address, [value])
            expected[name] = value
            continue
        type_ = rng.choice([*ORACLE, "string", "bool"])
        point: dict[str, Any] = {
            "table": table,
            "address": cursor[table],
            "type": type_,
            "word_order": rng.choice(["big", "little"]),
            "byte_order": rng.choice(["big", "little"]),
        }
        if type_ == "bool":
            point["bit"] = rng.randint(0, 15)
            value = rng.random() < 0.5
            register = rng.randint(0, 0xFFFF) & ~(1 << point["bit"]) | (value << point["bit"])
            bank.put(table, point["address"], [register])
            size = 1
        else:
            if type_ == "string":
                point["length"] = rng.randint(4, 6)
            value = random_value(rng, type_)
            regs = oracle_registers(point, value)
            bank.put(table, point["address"], regs)
            size = point.get("length") or REGISTERS_OF_TYPE[type_]
        point["writable"] = table == "holding" and type_ != "bool"
        points[name] = point
        expected[name] = value
        cursor[table] += size + rng.choice([0, 0, 1, 3, 9, 10, 11, 30])
    limits = {"max_gap": rng.randint(0, 12), "max_request_registers": rng.randint(6, 125)}
    device = device_model(
        id=f"d{unit}", bus="b1", profile="t", address=unit, location=LOCATION, points=points, **limits
    )
    return device, expected


async def test_random_maps_read_back_exactly(bank_server: BankServer) -> None:
    rng = random.Random(20261128)
    driver = ModbusDriver(tcp_bus(bank_server), [])
    await driver.open()
    try:
        for _ in range(100):
            for bank in bank_server.banks.values():
                bank.reset()
            device, expected = random_device(rng, 1, bank_server.banks[1])
            got: dict[str, Any] = {}
            for request in driver.plan(device):
                assert request.count <= (125 if request.table != "coil" else 2000)
                got.update({s.point: s.value for s in await driver.read(device, request)})
            assert got == expected, device
            # And back: every writable point written with a new value lands as pymodbus encodes it.
            bank = bank_server.banks[1]
            for name, point in device.points.items():
                if not point.writable:
                    continue
                if point.table == "coil":
                    await driver.write(device, name, not expected[name])
                    assert bank.tables["coil"][point.address] == int(not expected[name])
                    continue
                value = random_value(rng, point.type)
                await driver.write(device, name, value)
                spec = {
                    "type": point.type,
                    "word_order": point.word_order,
                    "byte_order": point.byte_order,
                    "length": point.length,
                }
                regs = [bank.tables["holding"].get(point.address + i, 0) for i in range(point.register_count)]
                assert regs == oracle_registers(spec, value), (name, point, value)
    finally:
        await driver.close()
