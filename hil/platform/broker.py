"""Brokers for tests and the demo: a real Mosquitto on a free loopback port, or (demo only, when
Mosquitto is not installed) an embedded pure-Python amqtt broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, or None."""
    for p in MOSQUITTO_PATHS:
        if os.access(p, os.X_OK):
            return p
    return shutil.which("mosquitto")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout_s: float = 10.0) -> None:
    """Block until something accepts TCP on host:port; TimeoutError otherwise."""
    end = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > end:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s") from None
            time.sleep(0.05)


class MosquittoBroker:
    """A Mosquitto process on 127.0.0.1:<port> with a temp config; `kill()` and `start()` again keep
    the port, so clients reconnect to the same URL after a broker crash."""

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        workdir: Path | None = None,
        extra_config: str = "",
        persistence: bool = False,
    ) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise FileNotFoundError("mosquitto is not installed (Debian package 'mosquitto')")
        self.binary = binary
        self.host = host
        self.port = port or free_port(host)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="citynerve-mosquitto-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.extra_config = extra_config
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def write_config(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "max_inflight_messages 0",
            "max_queued_messages 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            # Run as root, mosquitto would switch to user `mosquitto`, which cannot read our temp
            # dir (certs, password file). Keep the caller's user.
            *(["user root"] if os.geteuid() == 0 else []),
            self.extra_config,
        ]
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (or restart) the broker on the same port and wait until it accepts connections."""
        if self.running:
            return
        conf = self.write_config()
        deadline = time.monotonic() + timeout_s
        while True:
            # The old process's socket may linger for a moment after a kill; retry the bind.
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.binary, "-c", str(conf)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                wait_port(self.host, self.port, timeout_s=min(2.0, max(0.1, deadline - time.monotonic())))
                return
            except TimeoutError:
                if self.proc.poll() is None and time.monotonic() > deadline:
                    raise
                self._reap()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the broker dies without closing sessions (a crash, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._reap()

    def freeze(self) -> None:
        """SIGSTOP: a hung broker. Connections stay open, nothing is answered (no PUBACK, no
        CONNACK, no PINGRESP) until `thaw`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: the broker goes on with what queued up while it was frozen."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen broker cannot act on SIGTERM
            self.proc.terminate()
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def start_demo_broker(
    host: str = "127.0.0.1", port: int = 0, *, embedded: bool | None = None
) -> tuple[str, int, Callable[[], Awaitable[None]]]:
    """A broker for the demo: Mosquitto when installed, else an embedded amqtt broker in this loop.

    Returns (host, port, stop). `embedded=True` forces amqtt, which speaks MQTT 3.1.1 only and has no
    shared subscriptions: configure the uplink and the consumer for MQTT 3.1.1 and group=None
    (hil/demo.py `demo_broker_kind`).
    For the demo only: the tests run against Mosquitto.
    """
    port = port or free_port(host)
    if embedded is None:
        embedded = find_mosquitto() is None
    if not embedded:
        broker = MosquittoBroker(host=host, port=port)
        await asyncio.to_thread(broker.start)

        async def stop_mosquitto() -> None:
            await asyncio.to_thread(broker.close)

        return host, port, stop_mosquitto
    from amqtt.broker import Broker  # lazy: only the demo without Mosquitto needs it

    amqtt_broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
    )
    await amqtt_broker.start()

    async def stop_amqtt() -> None:
        await amqtt_broker.shutdown()

    return host, port, stop_amqtt
