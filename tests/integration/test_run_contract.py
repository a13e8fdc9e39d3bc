"""The wire contract as a platform sees it from a real `citynerve run`: a real pymodbus server holding
float32 and float64 registers, a real Mosquitto, raw MQTT payloads read by a plain subscriber.

- a float32 register holding 230.1 arrives as the JSON text 230.1 (the shortest decimal that is the
  same float32), a float64 one as the shortest text of the double;
- `ts` and `ts_ms` are the same instant in every message (telemetry, status, inventory).
"""

from __future__ import annotations

import asyncio
import json
import struct
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt

from hil.platform import MosquittoBroker
from tests.integration.conftest import GatewayProcess
from tests.modbus.modbus_support import start_bank_server

GW = "gw-contract"


def _regs(fmt: str, value: float) -> list[int]:
    raw = struct.pack(fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def _config(tmp: Path, modbus_port: int, broker: MosquittoBroker) -> Path:
    profiles = tmp / "profiles"
    profiles.mkdir()
    (profiles / "test-meter.toml").write_text(
        textwrap.dedent(
            """
            id = "test-meter"
            family = "modbus"
            source = "tests/integration/test_run_contract.py: float registers"
            poll_interval_s = 0.1
            [points.voltage]
            table = "holding"
            address = 0
            type = "float32"
            unit = "V"
            max_interval_s = 0.1
            [points.energy]
            table = "holding"
            address = 2
            type = "float64"
            unit = "kWh"
            max_interval_s = 0.1
            """
        )
    )
    path = tmp / "gw.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [gateway]
            id = "{GW}"
            org = {{ city = "310100", district = "310106", street = "310106013" }}
            [store]
            path = "var/gw.db"
            commit_interval_ms = 20
            [control]
            socket = "var/gw.sock"
            [[buses]]
            id = "tcp-1"
            protocol = "modbus_tcp"
            host = "127.0.0.1"
            port = {modbus_port}
            timeout_s = 0.5
            min_poll_interval_s = 0.1
            [[devices]]
            id = "pm-1"
            bus = "tcp-1"
            profile = "test-meter"
            address = 1
            location = {{ address_code = "310106013007" }}
            [upstream]
            brokers = ["mqtt://{broker.host}:{broker.port}"]
            """
        )
    )
    return path


def _same_instant(body: dict[str, Any]) -> None:
    ts_ms = body["ts_ms"]
    assert (
        body["ts"] == datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    ), body
    assert datetime.fromisoformat(body["ts"].replace("Z", "+00:00")).timestamp() * 1000 == ts_ms


async def test_float32_register_arrives_as_its_shortest_decimal_and_ts_is_ts_ms(tmp_path: Path) -> None:
    srv = await start_bank_server((1,))
    srv.banks[1].put("holding", 0, _regs(">f", 230.1))
    srv.banks[1].put("holding", 2, _regs(">d", 1234.5678))
    try:
        with MosquittoBroker() as broker:
            gw = GatewayProcess(_config(tmp_path, srv.port, broker))
            async with aiomqtt.Client(broker.host, broker.port) as sub:
                await sub.subscribe(f"+/{GW}/#", qos=1)
                gw.start()
                try:
                    payloads: dict[str, list[bytes]] = {}
                    async with asyncio.timeout(60):
                        async for msg in sub.messages:
                            kind = str(msg.topic).rsplit("/", 1)[-1]
                            assert isinstance(msg.payload, bytes)
                            payloads.setdefault(kind, []).append(msg.payload)
                            if len(payloads.get("telemetry", [])) >= 3 and "inventory" in payloads:
                                break
                finally:
                    gw.stop()
    finally:
        await srv.server.shutdown()
    for kind in ("telemetry", "status", "inventory"):
        for raw in payloads[kind]:
            _same_instant(json.loads(raw))
    text = b"".join(payloads["telemetry"])
    assert b'"point":"voltage","value":230.1,' in text, text[:400]
    assert b"230.10000610351562" not in text
    assert b'"point":"energy","value":1234.5678,' in text
    values = {r["point"]: r["value"] for raw in payloads["telemetry"] for r in json.loads(raw)["readings"]}
    assert values == {"voltage": 230.1, "energy": 1234.5678}
