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

from citynerve.hil.platform import CommandSigner, MosquittoBroker
from tests.integration.conftest import GatewayProcess
from tests.modbus.modbus_support import start_bank_server
from tests.uplink.conftest import PLATFORM_SIGNER, platform_key_file

GW = "gw-contract"
SETPOINT = {"device_id": "pm-1", "point": "setpoint"}


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
            [points.setpoint]
            table = "holding"
            address = 10
            type = "int16"
            scale = 0.1
            unit = "degC"
            writable = true
            max_interval_s = 60
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
            commands = {{ enabled = true, hmac_key_file = "{platform_key_file()}" }}
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
                    payloads: dict[str, list[bytes]] = {"result": []}
                    too_big: dict[str, Any] = {}
                    good: dict[str, Any] = {}
                    async with asyncio.timeout(60):
                        async for msg in sub.messages:
                            kind = str(msg.topic).rsplit("/", 1)[-1]
                            assert isinstance(msg.payload, bytes)
                            payloads.setdefault(kind, []).append(msg.payload)
                            if kind == "inventory":  # the gateway is connected: command it
                                too_big = PLATFORM_SIGNER.command(
                                    GW, "write_point", {**SETPOINT, "value": 40000}
                                )
                                good = PLATFORM_SIGNER.command(GW, "write_point", {**SETPOINT, "value": 215})
                                for c in (too_big, good, good):  # `good` twice: idempotent by id
                                    await sub.publish(f"citynerve/{GW}/cmd", CommandSigner.payload(c), qos=1)
                            if (
                                len(payloads.get("telemetry", [])) >= 3
                                and len(payloads.get("result", [])) >= 3
                            ):
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
    assert values["voltage"] == 230.1 and values["energy"] == 1234.5678
    # The writable point's value domain is in the inventory, and a write outside it is refused.
    inventory = json.loads(payloads["inventory"][-1])
    points = {p["name"]: p for p in inventory["devices"][0]["points"]}
    assert points["setpoint"]["domain"] == {"type": "integer", "min": -32768, "max": 32767}
    assert "domain" not in points["voltage"]
    results = [json.loads(r) for r in payloads["result"]]
    outcomes = sorted((r["outcome"], r["reason"] or "", r["command_id"]) for r in results)
    assert outcomes == [
        ("ok", "", good["id"]),
        ("ok", "", good["id"]),
        ("rejected", "bad_value", too_big["id"]),
    ]
    assert srv.banks[1].tables["holding"][10] == 215  # written once
