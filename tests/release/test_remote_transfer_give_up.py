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
import time
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.release import remote, transfer

from .test_remote_transfer import BASE, CALLER, CHUNK, Gateway, Origin, bundle_of, url_args

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


async def test_an_abandoned_chunked_transfer_fails_and_frees_its_space(root: Path, quick: None) -> None:
    clock = Clock()
    b = bundle_of(os.urandom(8 * CHUNK))
    part = root / "update" / "transfer" / "bundle.part"
    async with Gateway(root, monotonic=clock) as gw:
        await gw.start(b.start_args("u-1"))
        assert part.stat().st_blocks * 512 >= b.size  # reserved at once
        await gw.ru.on_chunk(f"{TOPIC}/table", b.table())
        for i in (0, 1):
            await gw.ru.on_chunk(f"{TOPIC}/{i}", b.chunk(i))
        clock.now += BOUND - 1
        await asyncio.sleep(0.1)  # the run loop looked (several times)
        await gw.ru.on_chunk(f"{TOPIC}/2", b.chunk(2))  # one more: the platform is still sending
        clock.now += BOUND - 1
        await asyncio.sleep(0.1)
        assert "failed" not in gw.phases() and gw.ru.chunks == 3
        clock.now += 1
        await gw.until("failed", timeout_s=10)
        reason = gw.events[-1].attrs["reason"]
        assert reason == (
            "no new chunk for 21600 s at 12288 of 32768 bytes; the partial transfer is removed"
        ), reason
        assert not part.exists()
        status = await gw.ru.actions()["update_status"].handler({}, CALLER)
        assert (status["phase"], status["reason"]) == ("failed", reason)
        await gw.ru.on_chunk(f"{TOPIC}/3", b.chunk(3))  # too late: dropped
        assert gw.ru.chunks == 3
        again = await gw.start(b.start_args("u-1"))  # the platform starts it again
        assert (again["phase"], again["missing"]) == ("receiving", [[0, 7]])


def age(root: Path, seconds: float) -> None:
    """The transfer's files as last written `seconds` ago (the gateway was off meanwhile)."""
    then = time.time() - seconds
    for f in (root / "update" / "transfer").iterdir():
        os.utime(f, (then, then))


async def test_a_chunked_transfer_found_after_a_restart_counts_its_idle_time(root: Path, quick: None) -> None:
    b = bundle_of(os.urandom(8 * CHUNK))
    part = root / "update" / "transfer" / "bundle.part"
    async with Gateway(root) as gw:
        await gw.start(b.start_args("u-1"))
        await gw.ru.on_chunk(f"{TOPIC}/table", b.table())
        await gw.ru.on_chunk(f"{TOPIC}/0", b.chunk(0))
    age(root, BOUND - 100)  # off for a while, not for the whole bound: resumed, the rest counted
    clock = Clock()
    async with Gateway(root, monotonic=clock) as gw:
        answer = await gw.start(b.start_args("u-1"))
        assert (answer["phase"], answer["missing"]) == ("receiving", [[1, 7]])
        clock.now += 90
        await asyncio.sleep(0.1)
        assert gw.phases() == []
        clock.now += 20
        await gw.until("failed", timeout_s=10)
        assert gw.events[-1].attrs["reason"].startswith("no new chunk for 21600 s at 4096 of 32768 bytes")
    assert not part.exists()
    # Left incomplete and older than the bound (a box that restarts every few hours included):
    # failed and removed at start, its fallocated space not kept until the next update_start.
    async with Gateway(root) as gw:
        await gw.start(b.start_args("u-1"))
        await gw.ru.on_chunk(f"{TOPIC}/table", b.table())
    age(root, BOUND + 60)
    async with Gateway(root, monotonic=Clock()) as gw:
        await gw.until("failed", timeout_s=10)
        assert gw.events[-1].attrs["reason"].startswith("no new chunk for 21600 s at 0 of 32768 bytes")
    assert not part.exists()


async def test_a_download_found_after_a_restart_gets_one_more_try(
    root: Path, quick: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retries a minute apart: before the restart exactly one request goes out (a quick retry of
    # the stopped gateway's, still in its thread, reached the server after the count was reset),
    # and after it the one try is all there is.
    monkeypatch.setattr(transfer, "RETRY_MIN_S", 60.0)
    monkeypatch.setattr(transfer, "RETRY_MAX_S", 60.0)
    data = os.urandom(200_000)
    with Origin(data) as origin:
        origin.status["/b"] = 503
        for back in (False, True):  # the server still down at the restart, then back by then
            async with Gateway(root) as gw:
                await gw.start(url_args(data, f"{origin.base}/b"))
                await until(lambda: origin.paths().count("/b") >= 1)
            age(root, BOUND + 60)  # a box that restarts every few hours included
            origin.requests.clear()
            if back:
                del origin.status["/b"]
            async with Gateway(root, monotonic=Clock()) as gw:  # one try from where the file ends
                await gw.until("failed", timeout_s=10)
            assert origin.paths() == ["/b"]
            if back:  # it brought bytes: the download went on, complete (the hash matched)
                assert gw.phases() == ["verifying", "applying", "failed"], gw.phases()
            else:
                assert gw.phases() == ["failed"]
                assert gw.events[-1].attrs["reason"].startswith("download: no progress from 127.0.0.1:")
