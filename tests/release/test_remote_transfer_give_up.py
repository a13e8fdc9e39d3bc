"""A transfer that makes no progress gives up after `transfer_give_up_s` (default 6 h) and removes its
partial bundle: a URL download from a loopback server that answers 503 or from a port that refuses
connections, chunks the platform stopped sending, and both found on disk after a restart. The
monotonic clock is the test's (it moves only when the test moves it); the download's back-off is
shortened so its retries are many and quick."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.release import remote, transfer

from .test_remote_transfer import BASE, Gateway, Origin, url_args

BOUND = 21600  # the default transfer_give_up_s
TOPIC = f"{BASE}/update/u-1"


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Failing(Origin):
    """The loopback origin whose first answer to `/drop` is cut off after the first read block (65536
    bytes reach the part file) and every later answer is 503 Service Unavailable."""

    def answer(self, h: Any) -> None:
        if len(self.requests) > 1:
            self.status[h.path] = 503
        super().answer(h)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "opt" / "releases").mkdir(parents=True)
    org = 'org = { city = "310100", district = "310106", street = "310106013" }'
    (tmp_path / "opt" / "gw.toml").write_text(f'[gateway]\nid = "gw-1"\n{org}\n')
    return tmp_path / "opt"


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer, "RETRY_MIN_S", 0.002)
    monkeypatch.setattr(transfer, "RETRY_MAX_S", 0.002)
    monkeypatch.setattr(remote, "WATCHDOG_CHECK_S", 0.01)  # the run loop's checks


async def until(check: Any) -> None:
    """Polled (the server's thread or the log moves it), 10 s at most."""
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not reached in 10 s")


def retries_logged(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"retry ([0-9]+) in", text)]


async def test_a_download_answered_503_gives_up_and_its_log_stays_bounded(
    root: Path, quick: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "citynerve.update")
    clock = Clock()
    data = os.urandom(200_000)
    part = root / "update" / "transfer" / "bundle.part"
    with Failing(data) as origin:
        async with Gateway(root, monotonic=clock) as gw:
            await gw.start(url_args(data, f"{origin.base}/drop"))
            await until(lambda: len(origin.requests) >= 40)
            clock.now += BOUND - 1  # no new byte since the first answer, almost 6 h
            n = len(origin.requests)
            await until(lambda: len(origin.requests) >= n + 5)
            assert gw.phases() == ["downloading"]
            clock.now += 1
            await gw.until("failed", timeout_s=10)
            tries = len(origin.requests) - 1  # the first answer brought bytes
    reason = gw.events[-1].attrs["reason"]
    assert reason == (
        f"download: no progress from 127.0.0.1:{origin.server.server_address[1]} for 21600 s "
        "(last: HTTP status 503 Service Unavailable) at 65536 of 200000 bytes; the partial download "
        "is removed"
    ), reason
    assert not part.exists()
    # A warning at retries 1, 2, 4, 8, ...: a dead server for 6 h logs ~10 lines, not one every 30 s.
    logged = retries_logged(caplog.text)
    assert logged == [2**i for i in range(len(logged))] and 2 ** len(logged) > tries >= 45, logged


async def test_a_download_from_a_port_that_refuses_gives_up(
    root: Path, quick: None, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    data = os.urandom(1000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused
        port = s.getsockname()[1]
        async with Gateway(root, monotonic=clock) as gw:
            await gw.start(url_args(data, f"http://127.0.0.1:{port}/b?X-Amz-Signature=secret"))
            await until(lambda: 16 in retries_logged(caplog.text))
            assert gw.phases() == ["downloading"]
            clock.now += BOUND
            await gw.until("failed", timeout_s=10)
    reason = gw.events[-1].attrs["reason"]
    assert reason == (
        f"download: no progress from 127.0.0.1:{port} for 21600 s "
        "(last: [Errno 111] Connection refused) at 0 of 1000 bytes"
    ), reason
    assert "secret" not in caplog.text  # a pre-signed URL's query is a credential
    assert not (root / "update" / "transfer" / "bundle.part").exists()


async def test_a_fresh_url_gives_the_download_a_new_bound(root: Path, quick: None) -> None:
    clock = Clock()
    data = os.urandom(200_000)
    with Origin(data) as origin:
        origin.status["/busy"] = origin.status["/busy2"] = 503
        async with Gateway(root, monotonic=clock) as gw:
            await gw.start(url_args(data, f"{origin.base}/busy"))
            await until(lambda: len(origin.requests) >= 5)
            clock.now += BOUND - 1
            await gw.start(url_args(data, f"{origin.base}/busy2"))  # the platform is still there
            clock.now += BOUND - 1
            n = len(origin.requests)
            await until(lambda: len(origin.requests) >= n + 5)
            assert gw.phases() == ["downloading"]
            clock.now += 1
            await gw.until("failed", timeout_s=10)
        assert "no progress" in gw.events[-1].attrs["reason"]
