"""`reload` on a running gateway: changed buses restart, others keep polling, nothing buffered is lost."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from citynerve.gateway.control import ControlError, ask
from citynerve.gateway.store import read_stats
from tests.integration.conftest import GatewayProcess, gateway_config


def status(sock: Path) -> dict:
    return asyncio.run(ask(sock, "status"))


def test_reload_adds_a_device_and_keeps_the_outbox(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    config = gateway_config(tmp_path, modbus_peer, buses=2, units=2)
    sock, db = tmp_path / "var" / "gw.sock", tmp_path / "var" / "gw.db"
    gw = gateway_process(config)
    gw.start()
    gw.wait_for(lambda: sock.exists() and status(sock)["devices_online"] == 4)
    before = status(sock)
    polls_tcp0 = before["buses"][0]["counters"]["transactions"]

    # A broken edit is refused with every issue; the gateway keeps running as it was.
    good = config.read_text()
    config.write_text(good + '\n[[devices]]\nid = "bad"\nbus = "nope"\n')
    with pytest.raises(ControlError) as info:
        asyncio.run(ask(sock, "reload"))
    assert info.value.type == "ConfigError", info.value.message
    assert "devices[4] (id 'bad').bus" in info.value.message

    config.write_text(
        good
        + '\n[[devices]]\nid = "d1-9"\nbus = "tcp-1"\nprofile = "test-counter"\naddress = 9\n'
        + 'location = { address_code = "310106013007" }\n'
    )
    rows_before = sum(lane.rows for lane in read_stats(db).lanes)
    result = asyncio.run(ask(sock, "reload"))
    assert result == {"changed": ["tcp-1"], "added": [], "removed": [], "restart_needed_for": []}
    gw.wait_for(lambda: status(sock)["devices_online"] == 5)
    after = status(sock)
    # tcp-0 was not touched: its owner (and counters) kept going.
    assert after["buses"][0]["counters"]["transactions"] > polls_tcp0
    assert assert_rows_kept(db, rows_before)
    assert gw.kill(signal.SIGTERM) == 0


def assert_rows_kept(db: Path, rows_before: int) -> bool:
    return sum(lane.rows for lane in read_stats(db).lanes) >= rows_before
