"""Uplink test fixtures: a real Mosquitto on a free loopback port (killable, restartable on the same
port), a real outbox file, the reference platform consumer, and schema validation of every message."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import UpstreamConfig, load_schema
from citynerve.hil.platform import CommandSigner, MosquittoBroker, PlatformConsumer, find_mosquitto

PLATFORM_KEY = bytes.fromhex("a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90")
"""The platform's key in these tests: it signs commands and end-to-end acks (`[upstream.commands]`)."""
PLATFORM_SIGNER = CommandSigner(hmac_key=PLATFORM_KEY)

KIND_SCHEMA = {
    "telemetry": "telemetry",
    "events": "events",
    "status": "status",
    "inventory": "inventory",
    "cmd/result": "command_result",
    "cmd": "command",
    "ack": "ack",
}


def validate_message(kind: str, body: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `body` matches the contract's schema for `kind`."""
    schema = load_schema(KIND_SCHEMA[kind])
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(body)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is not installed: `apt-get install mosquitto` (.ci/run does this)")
    b = MosquittoBroker(workdir=tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[AsyncOutbox]:
    async with AsyncOutbox(tmp_path / "outbox.sqlite", synchronous="normal") as ob:
        yield ob


@pytest.fixture
async def consumer(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[PlatformConsumer]:
    errors: list[str] = []

    def check(kind: str, body: dict[str, Any]) -> None:
        try:
            validate_message(kind, body)
        except jsonschema.ValidationError as err:
            errors.append(f"{kind}: {err.message}")
            raise

    c = PlatformConsumer(
        host=broker.host,
        port=broker.port,
        db_path=tmp_path / "platform.sqlite",
        validate=check,
        ack_signer=PLATFORM_SIGNER,
    )
    async with c:
        await c.wait_connected()
        yield c
    assert not errors, f"messages that break the contract: {errors[:5]}"
    assert c.invalid == 0


def upstream(broker: MosquittoBroker | str, **kw: Any) -> UpstreamConfig:
    base: dict[str, Any] = {
        "brokers": [broker if isinstance(broker, str) else broker.url],
        "backoff": {"initial_s": 0.1, "max_s": 0.5, "jitter": 0.2},
        "replay_max_msgs_per_s": 10_000,
        "replay_burst": 1000,
    }
    base.update(kw)
    if base.get("e2e_ack") and "commands" not in base:
        base["commands"] = {"hmac_key_file": str(platform_key_file())}  # acks are signed with it
    return UpstreamConfig.model_validate(base)


def platform_key_file() -> Path:
    """A file holding PLATFORM_KEY (hex), written once per test session."""
    global _KEY_FILE
    if _KEY_FILE is None:
        _KEY_FILE = Path(tempfile.mkdtemp(prefix="citynerve-test-key-")) / "platform.key"
        _KEY_FILE.write_text(PLATFORM_KEY.hex())
        _KEY_FILE.chmod(0o600)  # secret files others may read are refused
    return _KEY_FILE


_KEY_FILE: Path | None = None


def readings(n: int, start: int = 0, device: str = "wm-1") -> list[Reading]:
    return [Reading(device, "flow", float(i), "m3/h", 1_780_000_000.0 + i) for i in range(start, start + n)]


def alarm(i: int = 0, device: str = "smoke-3f") -> Event:
    return Event(
        device,
        "smoke",
        EventState.RAISED,
        Severity.CRITICAL,
        1_780_000_000.0 + i,
        rule="smoke",
        value=True,
        message=f"smoke #{i}",
        attrs={"location": {"address_code": "320508001", "floor": "3"}, "component_code": "3205080101000001"},
    )


INVENTORY = [
    {
        "device_id": "wm-1",
        "profile": "modbus-water-meter",
        "bus": "rs485-1",
        "location": {
            "address_code": "320508001",
            "lat": 31.3,
            "lon": 120.6,
            "building": "A",
            "floor": "1",
            "room": "pump",
        },
        "component_code": "3205080101000001",
        "tags": ["water"],
        "points": [
            {"name": "flow", "unit": "m3/h", "writable": False},
            {"name": "valve", "unit": "", "writable": True},
        ],
    }
]


async def wait_for(pred: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    """Poll an async predicate until true; TimeoutError after timeout_s."""
    # Polling on purpose: the state lives in a broker-side view (the consumer's SQLite), no event.
    async with asyncio.timeout(timeout_s):
        while True:
            if await pred():
                return
            await asyncio.sleep(0.05)
