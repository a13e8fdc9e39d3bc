"""`reload` on a running gateway: changed buses restart, others keep polling, nothing buffered is lost."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
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
    # `citynerve config reload` (the unit's ExecReload) checks the file first: exit 2, every issue.
    cli = reload_cli(config)
    assert cli.returncode == 2, cli.stderr
    assert "devices[4] (id 'bad').bus" in cli.stderr

    config.write_text(
        good
        + '\n[[devices]]\nid = "d1-9"\nbus = "tcp-1"\nprofile = "test-counter"\naddress = 9\n'
        + 'location = { address_code = "310106013007" }\n'
    )
    rows_before = sum(lane.rows for lane in read_stats(db).lanes)
    cli = reload_cli(config, "--json")
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert report["outcome"] == "reloaded"
    assert report["detail"] == {"changed": ["tcp-1"], "added": [], "removed": [], "restart_needed_for": []}
    gw.wait_for(lambda: status(sock)["devices_online"] == 5)
    after = status(sock)
    # tcp-0 was not touched: its owner (and counters) kept going.
    assert after["buses"][0]["counters"]["transactions"] > polls_tcp0
    assert assert_rows_kept(db, rows_before)
    # A change to [store] applies only at a start: exit 3 names the section to restart for.
    config.write_text(config.read_text().replace("commit_interval_ms = 20", "commit_interval_ms = 30"))
    cli = reload_cli(config)
    assert cli.returncode == 3, (cli.stdout, cli.stderr)
    assert "store" in cli.stderr and "systemctl restart citynerve" in cli.stderr
    assert gw.kill(signal.SIGTERM) == 0
    # With no gateway running, `systemctl reload` must not report success.
    cli = reload_cli(config)
    assert cli.returncode == 1 and "no gateway is running" in cli.stderr


def reload_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", "config", "reload", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=90,
    )


def assert_rows_kept(db: Path, rows_before: int) -> bool:
    return sum(lane.rows for lane in read_stats(db).lanes) >= rows_before
