"""`diag line` and the verdict in `status`, against the simulated Modbus building: directly on the
port and through a running gateway's bus owner."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from click.testing import CliRunner, Result

from citynerve.gateway.bus.linetest import latency_summary, serial_counters
from citynerve.gateway.cli import main
from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.runtime import Gateway
from citynerve.hil.sim.modbus import ModbusBuilding

from .conftest import wait_for


async def acli(*args: str) -> Result:
    return await asyncio.to_thread(lambda: CliRunner().invoke(main, list(args), catch_exceptions=False))


def test_latency_summary_and_counters_of_a_pty() -> None:
    assert latency_summary([]) is None
    s = latency_summary([float(i) for i in range(1, 101)])
    assert s == {"min": 1.0, "p50": 51.0, "p90": 90.0, "p99": 99.0, "max": 100.0}
    import os

    master, slave = os.openpty()
    try:
        assert serial_counters(os.ttyname(slave)) is None  # ptys keep no UART counters
    finally:
        os.close(master)
        os.close(slave)
    assert serial_counters("socket://127.0.0.1:502") is None


async def test_line_test_direct_counts_a_silent_unit(config_path: Path, building: ModbusBuilding) -> None:
    building.silence(3)
    r = await acli("diag", "line", "-c", str(config_path), "--bus", "tcp-1", "--repeat", "10", "--json")
    assert r.exit_code == 1, r.output  # 2 of 10 to the silent unit: below 99 %
    out = json.loads(r.output)
    assert out["route"] == "direct" and out["transactions"] == 10
    assert out["ok"] == 8 and out["failures_by_kind"] == {"timeout": 2}
    assert out["devices"]["wm-3"] == {"attempts": 2, "ok": 0, "timeout": 2}
    assert out["latency_ms"]["p50"] > 0
    assert out["serial_counters"] is None and "not available" in out["serial_counters_note"]
    r = await acli("diag", "line", "-c", str(config_path), "--bus", "tcp-1", "--repeat", "5")
    assert "failures by kind" in r.output and "not available" in r.output


async def test_line_test_and_verdict_through_the_running_gateway(
    gateway: Gateway, config: GatewayConfig, config_path: Path, building: ModbusBuilding
) -> None:
    r = await acli("diag", "line", "-c", str(config_path), "--bus", "tcp-1", "--repeat", "10", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["route"] == "gateway" and out["success_rate"] == 1.0
    building.silence(3)

    async def named() -> bool:
        st = await gateway.status()
        devs = {d["id"]: d for d in st["buses"][0]["devices"]}
        return devs["wm-3"]["cause"] == "device_silent"

    await wait_for(named, 20.0)
    r = await acli("status", "-c", str(config_path))
    assert r.exit_code == 0, r.output
    assert "its address (configured address 3)" in " ".join(r.output.split())


async def test_modbus_read_names_the_plausible_word_order(
    config_path: Path, building: ModbusBuilding
) -> None:
    # em-1 is a power meter at unit 1: input registers 0-1 hold voltage_a as float32 ABCD
    args = ("diag", "modbus", "read", "-c", str(config_path), "--bus", "tcp-1", "--unit", "1")
    r = await acli(*args, "--table", "input", "--address", "0", "--type", "float32", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out["orders"]) == {"ABCD", "CDAB", "BADC", "DCBA"}
    assert 200 < out["orders"]["ABCD"]["float32"] < 260
    assert out["plausible_orders"]["point"] == "em-1.voltage_a"
    # the live value moves: a swapped order can land on a believable number now and then
    assert "ABCD" in out["plausible_orders"]["by_type"]["float32"]
    r = await acli(*args, "--table", "input", "--address", "0", "--count", "2")
    text = " ".join(r.output.split())
    assert "each word / byte order" in text and "plausible against the bounds of em-1.voltage_a" in text
