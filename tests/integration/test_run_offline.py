"""A real `citynerve run`: the Modbus peer dies and comes back; devices go offline and online once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from citynerve.gateway.api import Event
from citynerve.gateway.control import ask
from citynerve.gateway.store import Lane, Outbox
from tests.integration.conftest import HERE, GatewayProcess, devices_online, gateway_config


def status(sock: Path) -> dict:
    return asyncio.run(ask(sock, "status"))


def offline_events(db: Path) -> list[tuple[str, str]]:
    outbox = Outbox(db)
    try:
        rows = outbox.peek(Lane.EVENT, limit=10_000)
    finally:
        outbox.close()
    events = [r.record for r in rows if isinstance(r.record, Event)]
    return [(e.device_id, str(e.state)) for e in events if e.kind == "device_offline"]


def rule_event_states(db: Path, kind: str) -> list[tuple[str, str]]:
    outbox = Outbox(db)
    try:
        rows = outbox.peek(Lane.EVENT, limit=10_000)
    finally:
        outbox.close()
    events = [r.record for r in rows if isinstance(r.record, Event)]
    return [(e.device_id, str(e.state)) for e in events if e.kind == kind]


def start_peer(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "modbus_peer.py"), "--units", "10", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def test_devices_go_offline_and_come_back(tmp_path: Path, gateway_process: type[GatewayProcess]) -> None:
    from citynerve.hil.platform import free_port

    port = free_port()
    peer = start_peer(port)
    config = gateway_config(tmp_path, port, buses=1, units=3)
    text = config.read_text().replace("timeout_s = 0.5", "timeout_s = 0.2\nbackoff_initial_s = 0.5")
    # A rule on the bus owner's offline events (e.g. the manhole pack's node-offline alarm).
    text += '\n[rules]\n[[rules.rules]]\nid = "meter_offline"\nkind = "offline"\nseverity = "major"\n'
    text += 'select = { profiles = ["test-counter"] }\n'
    config.write_text(text)
    db, sock = tmp_path / "var" / "gw.db", tmp_path / "var" / "gw.sock"
    gw = gateway_process(config)
    gw.start()
    try:
        gw.wait_for(lambda: devices_online(sock) == 3)
        peer.kill()
        peer.wait()
        gw.wait_for(lambda: status(sock)["devices_online"] == 0)
        st = status(sock)
        dev = st["buses"][0]["devices"][0]
        assert dev["online"] is False and dev["last_error"]
        assert dev["readings"]["count"]["quality"] == "stale"
        peer = start_peer(port)
        gw.wait_for(lambda: status(sock)["devices_online"] == 3, timeout_s=30)
        assert gw.kill(signal.SIGTERM) == 0  # a clean stop commits what the writer holds
    finally:
        peer.kill()
        peer.wait()
    events = offline_events(db)
    for d in ("d0-1", "d0-2", "d0-3"):
        assert [s for dev, s in events if dev == d] == ["raised", "cleared"], events
    rule_events = rule_event_states(db, "meter_offline")
    for d in ("d0-1", "d0-2", "d0-3"):
        assert [s for dev, s in rule_events if dev == d] == ["raised", "cleared"], rule_events
    log = gw.log.read_text()
    # Logged once when failing and once when back, not once per poll.
    assert log.count("d0-1 on bus tcp-0 is offline") == 1
    assert log.count("d0-1 on bus tcp-0 is back online") == 1
