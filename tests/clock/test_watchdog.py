"""systemd's notify protocol and watchdog: the unit asks for them, the real `citynerve run` sends
READY=1, pings while it works and stops pinging when its outbox writer hangs (a real notify socket)."""

from __future__ import annotations

import asyncio
import configparser
import socket
from pathlib import Path

from citynerve.gateway.api import Clock
from citynerve.gateway.service import render_unit
from citynerve.gateway.service.notify import Notifier, Watchdog
from citynerve.hil.faults.time import watchdog_hung_writer_stops_pings, watchdog_ready_and_pings
from citynerve.hil.sim.clock import NotifySocket


def test_the_unit_asks_for_notify_and_the_watchdog() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(render_unit("/opt/citynerve/bin/citynerve"))
    s = parser["Service"]
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert int(s["WatchdogSec"]) >= 30 and s["Restart"] == "on-failure"
    assert int(s["LimitNOFILE"]) == 4096


def test_notifier_path_and_abstract_sockets(short_dir: Path) -> None:
    folder = short_dir
    sink = NotifySocket(folder / "n.sock")
    try:
        n = Notifier({"NOTIFY_SOCKET": str(sink.path), "WATCHDOG_USEC": "3000000"})
        assert n.enabled and n.watchdog_s == 3.0
        assert n.send(READY="1", STATUS="multi\nline   status")
        sink.poll(2.0)
        assert sink.messages[-1][1] == {"READY": "1", "STATUS": "multi line status"}
    finally:
        sink.close()
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"citynerve-test-{id(abstract)}"
    abstract.bind("\0" + name)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).send(WATCHDOG="1")
        assert abstract.recv(100) == b"WATCHDOG=1"
    finally:
        abstract.close()
    # Not under systemd, or the watchdog meant for another process: nothing is sent, nothing fails.
    assert not Notifier({}).send(READY="1")
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"}).watchdog_s is None


class _Clock(Clock):
    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t


def test_a_stalled_component_is_named() -> None:
    clock = _Clock()
    last = {"bus[a]": 100.0, "outbox.writer": 100.0}
    wd = Watchdog(
        Notifier({"WATCHDOG_USEC": "2000000"}),
        lambda: {k: (lambda k=k: last[k]) for k in last},
        clock=clock,
    )
    clock.t = 101.5
    assert wd.stalled() == []
    last["bus[a]"] = 101.5
    clock.t = 102.5
    assert wd.stalled() == ["outbox.writer"]


def test_real_gateway_ready_pings_and_stopping(short_dir: Path) -> None:
    detail = asyncio.run(watchdog_ready_and_pings(short_dir))
    assert "READY=1" in detail and "STOPPING=1" in detail


def test_real_gateway_hung_outbox_writer_stops_the_pings(short_dir: Path) -> None:
    detail = asyncio.run(watchdog_hung_writer_stops_pings(short_dir))
    assert "pings stopped" in detail
