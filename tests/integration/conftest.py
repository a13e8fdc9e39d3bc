"""Processes for integration tests: a real Modbus peer and a real `citynerve run`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from citynerve.gateway.control import GatewayNotRunningError, ask

HERE = Path(__file__).parent


@pytest.fixture
def modbus_peer() -> Iterator[int]:
    """A pymodbus TCP server process with 10 units; yields its port."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "modbus_peer.py"), "--units", "10"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield port
    proc.kill()
    proc.wait()


def counter_profile(profiles: Path) -> None:
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "test-counter.toml").write_text(
        textwrap.dedent(
            """
            id = "test-counter"
            family = "modbus"
            source = "tests/integration/modbus_peer.py: holding register 0 counts up every 10 ms"
            poll_interval_s = 0.05
            [points.count]
            table = "holding"
            address = 0
            type = "uint16"
            max_interval_s = 0.001   # report every reading: the test wants a steady stream of commits
            [points.spare]
            table = "holding"
            address = 1
            type = "uint16"
            writable = true
            """
        )
    )


def gateway_config(tmp: Path, port: int, *, buses: int = 2, units: int = 5) -> Path:
    counter_profile(tmp / "profiles")
    text = textwrap.dedent(
        """
        [gateway]
        id = "gw-test"
        org = { city = "310100", district = "310106", street = "310106013" }
        [store]
        path = "var/gw.db"
        commit_interval_ms = 20
        [control]
        socket = "var/gw.sock"
        [log]
        format = "json"
        """
    )
    for b in range(buses):
        text += f'\n[[buses]]\nid = "tcp-{b}"\nprotocol = "modbus_tcp"\nhost = "127.0.0.1"\nport = {port}\n'
        text += "timeout_s = 0.5\nmin_poll_interval_s = 0.05  # the test profile polls every 50 ms\n"
        for u in range(1, units + 1):
            text += (
                f'\n[[devices]]\nid = "d{b}-{u}"\nbus = "tcp-{b}"\nprofile = "test-counter"\naddress = {u}\n'
                'location = { address_code = "310106013007" }\n'
            )
    path = tmp / "gw.toml"
    path.write_text(text)
    return path


class GatewayProcess:
    """`python -m citynerve.gateway.cli run -c FILE` as a child process."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def wait_for(self, predicate: object, timeout_s: float = 30.0) -> None:
        assert callable(predicate)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"gateway exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out; gateway log:\n{self.log.read_text()[-3000:]}")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def gateway_process() -> Iterator[type[GatewayProcess]]:
    made: list[GatewayProcess] = []

    class Tracked(GatewayProcess):
        def __init__(self, config: Path) -> None:
            super().__init__(config)
            made.append(self)

    yield Tracked
    for g in made:
        g.stop()


def devices_online(sock: Path) -> int | None:
    """`devices_online` of the gateway answering at `sock`; None while none answers yet. The socket
    file appears at bind(), a moment before listen(): a connect in between is refused, which a
    starting gateway is, not a stopped one."""
    if not sock.exists():
        return None
    try:
        return int(asyncio.run(ask(sock, "status"))["devices_online"])
    except GatewayNotRunningError:
        return None
