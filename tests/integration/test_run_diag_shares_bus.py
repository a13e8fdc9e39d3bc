"""A technician's diag through a real `citynerve run` shares the bus with the polls: a scan of silent
unit ids is run one unit per owner job, with the polls that fell due run in between (docs/
technician-guide.md, "Diagnostics never fight the gateway"). The Modbus peer is a real pymodbus
server in this process, which stamps every request it gets, so the gaps between a detector's polls
are measured where they happen, on the line."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer

from citynerve.gateway.control import ControlError, GatewayNotRunningError, ask
from tests.integration.conftest import GatewayProcess
from tests.modbus.modbus_support import RegisterBank

POLLED = (1, 2, 3, 4)  # detectors, each polled every second
STRAY = 104  # a unit no device is configured for, inside the scanned range: the scan finds it


@dataclass
class StampedBank(RegisterBank):
    """A register bank that notes the monotonic time of every request it answers."""

    stamps: list[float] = field(default_factory=list)

    def getValues(self, func_code: int, address: int, count: int = 1) -> Any:
        self.stamps.append(time.monotonic())
        return super().getValues(func_code, address, count)


@dataclass
class Peer:
    port: int
    banks: dict[int, StampedBank]
    connections: list[float]  # when each Modbus TCP client connected (the gateway's bus is one)


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    banks = {u: StampedBank() for u in (*POLLED, STRAY)}
    server = ModbusTcpServer(
        ModbusServerContext(devices=dict(banks), single=False),
        address=("127.0.0.1", 0),
        ignore_missing_devices=True,  # every other unit id is silent: the asker waits its timeout
    )
    connections: list[float] = []
    accept = server.handle_new_connection

    def counted() -> Any:
        connections.append(time.monotonic())
        return accept()

    server.handle_new_connection = counted  # type: ignore[method-assign]
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    yield Peer(port, banks, connections)
    await server.shutdown()


def _config(tmp: Path, port: int) -> Path:
    (tmp / "profiles").mkdir()
    (tmp / "profiles" / "test-detector.toml").write_text(
        textwrap.dedent(
            """
            id = "test-detector"
            family = "modbus"
            source = "tests/integration/test_run_diag_shares_bus.py"
            poll_interval_s = 1
            [points.smoke]
            table = "holding"
            address = 0
            type = "uint16"
            """
        )
    )
    text = textwrap.dedent(
        f"""
        profile_dirs = ["profiles"]
        [gateway]
        id = "gw-test"
        org = {{ city = "310100", district = "310106", street = "310106013" }}
        [store]
        path = "var/gw.db"
        [control]
        socket = "var/gw.sock"
        [log]
        format = "json"
        [[buses]]
        id = "tcp-1"
        protocol = "modbus_tcp"
        host = "127.0.0.1"
        port = {port}
        timeout_s = 0.5
        retries = 0
        """
    )
    for unit in POLLED:
        text += textwrap.dedent(
            f"""
            [[devices]]
            id = "sd-{unit}"
            bus = "tcp-1"
            profile = "test-detector"
            address = {unit}
            location = {{ address_code = "310106013007" }}
            """
        )
    path = tmp / "gw.toml"
    path.write_text(text)
    return path


async def _all_online(gw: GatewayProcess, sock: Path, limit_s: float = 30.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert gw.proc is not None and gw.proc.poll() is None, gw.log.read_text()[-3000:]
        try:
            if (await ask(sock, "status", timeout_s=5.0))["devices_online"] == len(POLLED):
                return
        except (GatewayNotRunningError, ControlError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"devices not online; gateway log:\n{gw.log.read_text()[-3000:]}")


def _largest_gap(stamps: list[float], start: float, end: float) -> float:
    """The longest time without a poll between `start` and `end` (both ends count as polls)."""
    inside = [start, *(s for s in stamps if start < s < end), end]
    return max(b - a for a, b in itertools.pairwise(inside))


@pytest.fixture
def gateway(tmp_path: Path, peer: Peer) -> Any:
    gw = GatewayProcess(_config(tmp_path, peer.port))
    gw.start()
    yield gw
    gw.stop()


async def test_a_scan_through_the_gateway_lets_the_detectors_be_polled(
    gateway: GatewayProcess, peer: Peer, tmp_path: Path
) -> None:
    sock = tmp_path / "var" / "gw.sock"
    await _all_online(gateway, sock)
    # The technician's command: 8 silent unit ids at 1.5 s each, one request of the CLI (its chunk).
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "citynerve.gateway.cli", "diag", "modbus", "scan"),
        *("-c", str(gateway.config), "--bus", "tcp-1", "--from", "100", "--to", "107"),
        *("--timeout", "1.5", "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out, err = await proc.communicate()
    ended = time.monotonic()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["route"] == "gateway"
    assert [a["unit"] for a in result["answered"]] == [STRAY]
    assert ended - started >= 7 * 1.5  # the silent units were each waited for
    # Every detector was polled throughout, each between two units: its longest wait is about one
    # unit's timeout (before, the whole chunk held the bus: 10-12 s without a poll of any of them;
    # one poll between two units, not every poll due, let each wait 4 units).
    for unit in POLLED:
        gap = _largest_gap(peer.banks[unit].stamps, started + 2.0, ended - 0.5)
        assert gap < 3.5, f"unit {unit}: {gap:.1f} s without a poll during the scan"

    # A raw control request is not bounded by the CLI's chunks: 10 silent units in one request.
    started = time.monotonic()
    answer = await ask(
        sock,
        "diag",
        timeout_s=60.0,
        bus="tcp-1",
        action="scan",
        params={"first": 110, "last": 119, "timeout_s": 1.0},
    )
    ended = time.monotonic()
    assert answer["answered"] == [] and answer["scanned"] == [110, 119] and answer["timeout_s"] == 1.0
    for unit in POLLED:
        gap = _largest_gap(peer.banks[unit].stamps, started + 2.0, ended - 0.5)
        assert gap < 3.0, f"unit {unit}: {gap:.1f} s without a poll during the scan"


async def _diag_read(config: Path) -> tuple[int, str, str]:
    """`citynerve diag modbus read` of a polled detector: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "citynerve.gateway.cli", "diag", "modbus", "read", "-c", str(config)),
        *("--bus", "tcp-1", "--unit", "1", "--address", "0", "--json"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_busy_control_socket_is_not_taken_for_a_stopped_gateway(
    gateway: GatewayProcess, peer: Peer, tmp_path: Path
) -> None:
    sock = tmp_path / "var" / "gw.sock"
    await _all_online(gateway, sock)
    # Stuck clients take every connection the control socket allows (MAX_CLIENTS, 16).
    held: list[socket.socket] = []
    try:
        while True:
            try:
                await ask(sock, "ping", timeout_s=5.0)
            except ControlError as err:
                assert err.type == "Busy"
                break
            assert len(held) < 64, "the control socket never said Busy"
            c = socket.socket(socket.AF_UNIX)
            c.connect(str(sock))
            held.append(c)
        connected = len(peer.connections)
        code, out, err = await _diag_read(gateway.config)
    finally:
        for c in held:
            c.close()
    # Before, diag took Busy for "no gateway", opened its own connection to the line the gateway
    # polls (two masters) and printed the register with `route: direct`.
    assert code == 1, out
    assert out == ""
    assert "the gateway is running but did not answer" in err and "Busy" in err and "retry" in err
    assert len(peer.connections) == connected  # nobody but the gateway's bus on the line
    # Once the stuck clients are gone, the same command goes through the gateway.
    code, out, err = await _diag_read(gateway.config)
    assert code == 0, err
    assert json.loads(out)["route"] == "gateway"


async def test_a_gateway_too_slow_to_answer_is_not_taken_for_a_stopped_one(
    gateway: GatewayProcess, peer: Peer, tmp_path: Path
) -> None:
    await _all_online(gateway, tmp_path / "var" / "gw.sock")
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGSTOP)  # its socket still takes connections; nothing answers
    connected = len(peer.connections)
    try:
        code, out, err = await _diag_read(gateway.config)
    finally:
        gateway.proc.send_signal(signal.SIGCONT)
    assert code == 1, out
    assert out == ""
    assert "the gateway is running but did not answer" in err and "Timeout" in err
    assert len(peer.connections) == connected
