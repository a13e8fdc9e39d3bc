"""A technician's `diag modbus scan` through a real `citynerve run` while a reload restarts the bus
(its settings changed, SIGHUP): the scan ends at once with a typed error that says what happened,
instead of hanging until the CLI's 120 s and blaming the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer

from citynerve.gateway.control import ControlError, GatewayNotRunningError, ask
from tests.integration.conftest import GatewayProcess
from tests.integration.test_run_diag_shares_bus import StampedBank

FIRST = 10  # the scan's first unit: it answers, so the test knows the scan has started
LAST = 60  # the others are silent: 0.3 s each, 15 s of scan


@contextlib.asynccontextmanager
async def peer() -> AsyncIterator[tuple[int, StampedBank]]:
    first = StampedBank()
    server = ModbusTcpServer(
        ModbusServerContext(devices={1: StampedBank(), FIRST: first}, single=False),
        address=("127.0.0.1", 0),
        ignore_missing_devices=True,  # every other unit id is silent: the scan waits its timeout
    )
    await server.serve_forever(background=True)
    try:
        yield server.transport.sockets[0].getsockname()[1], first  # type: ignore[attr-defined]
    finally:
        await server.shutdown()


def config(folder: Path, port: int) -> Path:
    (folder / "profiles").mkdir()
    (folder / "profiles" / "cnt.toml").write_text(
        'id = "cnt"\nfamily = "modbus"\nsource = "tests"\npoll_interval_s = 1\n'
        '[points.count]\ntable = "holding"\naddress = 0\ntype = "uint16"\n'
    )
    path = folder / "gw.toml"
    path.write_text(
        textwrap.dedent(
            f"""
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
            id = "tcp-a"
            protocol = "modbus_tcp"
            host = "127.0.0.1"
            port = {port}
            timeout_s = 0.5
            [[devices]]
            id = "m1"
            bus = "tcp-a"
            profile = "cnt"
            address = 1
            location = {{ address_code = "310106013007" }}
            """
        )
    )
    return path


async def online(gw: GatewayProcess, sock: Path) -> None:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        assert gw.proc is not None and gw.proc.poll() is None, gw.log.read_text()[-3000:]
        with contextlib.suppress(GatewayNotRunningError, ControlError):
            if (await ask(sock, "status", timeout_s=5.0))["devices_online"] == 1:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"m1 not online; gateway log:\n{gw.log.read_text()[-3000:]}")


async def test_a_scan_whose_bus_a_reload_restarts_ends_at_once_and_says_so(short_dir: Path) -> None:
    """The owner's cancellation left the running step's future unsettled (and later steps were
    queued on the stopped owner): the scan hung 120 s, then said "the gateway did not answer
    'diag'". Now the step's asker gets BusStoppedError at once, and the CLI says the bus restarted
    during the scan and to run it again."""
    async with peer() as (port, first):
        path = config(short_dir, port)
        gw = GatewayProcess(path)
        gw.start()
        scan: asyncio.subprocess.Process | None = None
        try:
            await online(gw, short_dir / "var" / "gw.sock")
            scan = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "citynerve.gateway.cli", "diag", "modbus", "scan", "-c", str(path)),
                *("--bus", "tcp-a", "--from", str(FIRST), "--to", str(LAST), "--timeout", "0.3", "--json"),
                cwd=short_dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
            deadline = time.monotonic() + 30.0
            while not first.stamps:  # the scan reached its first unit: its silent ones follow
                assert time.monotonic() < deadline, "the scan never started"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # a silent unit's step is running
            path.write_text(path.read_text().replace("timeout_s = 0.5", "timeout_s = 0.6"))
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGHUP)  # the bus's settings changed: its owner is restarted
            hup = time.monotonic()
            try:
                out, err = await asyncio.wait_for(scan.communicate(), 30.0)
            except TimeoutError:
                pytest.fail("the scan still runs 30 s after the reload restarted its bus")
            took = time.monotonic() - hup
            said = " ".join(err.decode().split())
            assert scan.returncode == 1, (out, said)
            assert "restarted during the scan" in said and "run it again" in said, said
            assert "did not answer" not in said, said
            assert took < 5.0, f"the scan ended {took:.1f} s after the reload"
        finally:
            if scan is not None and scan.returncode is None:
                scan.kill()
                await scan.wait()
            gw.stop()
