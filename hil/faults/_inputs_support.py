"""What the network- and port-input scenarios (hil/faults/inputs.py) share: a real `citynerve run`
with a fire panel printer port on a pty, the status page and the uplink to a real Mosquitto; a raw
HTTP client that can pick its loopback source address; and a garbage flood on a pty."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import resource
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tty
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from citynerve.gateway.control.client import ask
from citynerve.hil.faults import Broken
from citynerve.hil.platform import free_port

GATEWAY_ID = "gw-faults-inputs"
PANEL_ID = "GST-200-01"
WEB_USER = "tech"
WEB_PASSWORD = "correct horse battery"
REPO = Path(__file__).resolve().parents[2]


class PanelPort:
    """A pty pair: the gateway opens `link`; the scenario writes what the panel prints to `master`."""

    def __init__(self, workdir: Path) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.link = workdir / "ttyPANEL"
        self.link.symlink_to(os.ttyname(self._slave))

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class GarbageFlood(threading.Thread):
    """Writes garbage to the panel port at full speed for `seconds`: random bytes with line ends
    sprinkled in, printable junk lines nobody parses, and lines that never end. A thread, so the
    writer blocks on a full pty instead of the event loop. `sent`: bytes written."""

    def __init__(self, port: PanelPort, seconds: float, *, seed: int = 12) -> None:
        super().__init__(name="garbage-flood", daemon=True)
        rng = random.Random(seed)
        self._port = port
        self._seconds = seconds
        self._blocks = [
            bytes(rng.randrange(256) for _ in range(4096)),  # line noise
            b"".join(b"JUNK %06d ~~~ not a panel record\r\n" % i for i in range(120)),
            b"X" * 4096,  # a line that never ends
        ]
        self.sent = 0

    def run(self) -> None:
        end = time.monotonic() + self._seconds
        i = 0
        while time.monotonic() < end:
            try:
                self.sent += os.write(self._port.master, self._blocks[i % len(self._blocks)])
            except OSError:
                return
            i += 1


def garbage_flood(port: PanelPort, seconds: float, *, seed: int = 12) -> GarbageFlood:
    """Start a `GarbageFlood` on `port`; join it to wait for the end."""
    flood = GarbageFlood(port, seconds, seed=seed)
    flood.start()
    return flood


def platform_key(workdir: Path) -> bytes:
    """The platform's key (signs commands and e2e acks), written for the gateway's config."""
    key = secrets.token_bytes(32)
    path = workdir / "platform.key"
    path.write_text(key.hex())
    path.chmod(0o600)
    return key


class GatewayRun:
    """`python -m citynerve.gateway.cli run -c gw.toml` in `workdir` with a fire panel on `panel`, the status
    page on a free loopback port and (when `broker` is given) the uplink. `nofile` caps
    RLIMIT_NOFILE of the process as a small unit would."""

    def __init__(
        self,
        workdir: Path,
        panel: PanelPort,
        *,
        broker: str | None = None,
        password: bool = True,
        e2e: bool = False,
        commands: bool = False,
        nofile: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.web_port = free_port()
        self.socket = workdir / "var" / "gw.sock"
        self.db = workdir / "var" / "gw.db"
        self.log = workdir / "gateway.log"
        self.nofile = nofile
        self.proc: subprocess.Popen[bytes] | None = None
        self.last_poll_error = ""
        web = f'[web]\nenabled = true\nbind = "127.0.0.1"\nport = {self.web_port}\nusername = "{WEB_USER}"\n'
        if password:
            (workdir / "web.pw").write_text(WEB_PASSWORD + "\n")
            (workdir / "web.pw").chmod(0o600)  # secret files are refused when others can read them
            web += 'password_file = "web.pw"\n'
        upstream = ""
        if broker is not None:
            upstream = textwrap.dedent(
                f"""
                [upstream]
                brokers = ["{broker}"]
                e2e_ack = {"true" if e2e else "false"}
                status_interval_s = 5
                backoff = {{ initial_s = 0.2, max_s = 1.0, jitter = 0.2 }}
                commands = {{ enabled = {"true" if commands else "false"}, hmac_key_file = "platform.key" }}
                """
            )
        text = textwrap.dedent(
            f"""
            [gateway]
            id = "{GATEWAY_ID}"
            org = {{ city = "310100", district = "310106", street = "310106013" }}
            [store]
            path = "var/gw.db"
            commit_interval_ms = 50
            [control]
            socket = "var/gw.sock"
            [log]
            format = "json"

            [[buses]]
            id = "fire-panel"
            protocol = "firepanel"
            port = "{panel.link}"

            [[devices]]
            id = "fp-main"
            bus = "fire-panel"
            profile = "firepanel-gst"
            address = "{PANEL_ID}"
            location = {{ address_code = "310106013007", floor = "1", room = "fire control" }}
            """
        )
        self.config = workdir / "gw.toml"
        self.config.write_text(text + "\n" + web + upstream)

    def start(self) -> None:
        nofile = self.nofile

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                preexec_fn=limit,
            )

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await ask(self.socket, "status", timeout_s=10)
        return result

    async def wait_until(
        self, what: str, predicate: Callable[[], Awaitable[bool]], timeout_s: float = 30.0
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise Broken(f"the gateway exited ({self.proc.returncode}) waiting for {what}: {self.tail()}")
            try:
                if await predicate():
                    return
            except Broken:
                raise
            except Exception as err:  # not up yet (no socket, no status): ask again
                self.last_poll_error = f"{type(err).__name__}: {err}"
            await asyncio.sleep(0.1)
        raise Broken(f"timed out waiting for {what} ({self.last_poll_error}); gateway log: {self.tail()}")

    async def started(self) -> None:
        async def up() -> bool:
            status = await self.status()
            return all(b["channel"] == "open" for b in status["buses"])

        await self.wait_until("the gateway to start", up, 60.0)

    async def uplink_connected(self) -> dict[str, Any]:
        snap: dict[str, Any] = {}

        async def connected() -> bool:
            nonlocal snap
            snap = (await self.status())["uplink"]
            return bool(snap and snap["connected"])

        await self.wait_until("the uplink to connect", connected, 30.0)
        return snap

    def log_lines(self) -> int:
        with self.log.open("rb") as f:
            return sum(1 for _ in f)

    def tail(self, n: int = 1500) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Broken("the gateway did not stop within 30 s of SIGTERM") from None


def basic(user: str = WEB_USER, password: str = WEB_PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_get(
    port: int,
    path: str = "/",
    *,
    auth: str | None = None,
    source: str = "127.0.0.1",
    timeout_s: float = 10.0,
) -> int:
    """One GET to the page from loopback address `source`; the status code, or 0 when the server
    closed or reset the connection without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s, source_address=(source, 0)) as s:
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        if auth:
            head += f"Authorization: {auth}\r\n"
        try:
            s.sendall((head + "\r\n").encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return 0
                data += chunk
        except ConnectionError:
            return 0
    parts = data.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


async def get(port: int, path: str = "/", **kw: Any) -> int:
    return await asyncio.to_thread(http_get, port, path, **kw)


def raise_nofile() -> None:
    """Let this (scenario) process hold thousands of client sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def open_many(port: int, n: int) -> list[socket.socket]:
    """`n` connections to the page (non-blocking connects), held open by the caller."""
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        out.append(s)
    return out


def json_lines(path: Path, *, contains: str) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if contains in line:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out
