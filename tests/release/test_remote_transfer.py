"""The gateway's side of remote updates without a release build: the transfer's checks and bounds
on a real folder (chunks against the signed table, resume from the data on disk after a restart,
the whole hash, the disk budget, busy, the rate limit) and a URL download over HTTP on loopback
(a refused URL, a fresh URL for the same update, a connection cut off, a restart meanwhile).
The whole flow with real releases, processes and Mosquitto is in test_update.py."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import http.server
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.api import Event, boot_id
from citynerve.gateway.release import remote
from citynerve.gateway.release.config import UpdateConfig
from citynerve.gateway.release.remote import RemoteUpdate
from citynerve.gateway.uplink.commands import Caller
from citynerve.gateway.uplink.encoding import RejectReason
from citynerve.gateway.uplink.errors import CommandRejectedError
from citynerve.hil.platform.fleet_update import Bundle

from .conftest import http_folder

BASE = "citynerve/gw-1"
CHUNK = 4096
CALLER = Caller("releases", "c-1")


class Gateway:
    """One gateway process's RemoteUpdate on a root folder, with the events it emitted."""

    def __init__(self, root: Path, monotonic: Callable[[], float] = time.monotonic, **cfg: Any) -> None:
        self.events: list[Event] = []
        self._new = asyncio.Event()
        defaults: dict[str, Any] = {"disk_budget_bytes": 64 << 20, "min_free_bytes": 0}
        config = UpdateConfig(root=root, service="process", **{**defaults, **cfg})
        self.ru = RemoteUpdate(config, config_path=root / "gw.toml", gateway_id="gw-1", topic_base=BASE,
                               events=self._event, monotonic=monotonic)  # fmt: skip
        self.task: asyncio.Task[None] | None = None

    def _event(self, event: Event) -> None:
        self.events.append(event)
        self._new.set()

    async def __aenter__(self) -> Gateway:
        self.task = asyncio.create_task(self.ru.run())
        await asyncio.sleep(0.05)  # the resume step runs first
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def start(self, args: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.ru.actions()["update_start"].handler(args, CALLER))

    def phases(self) -> list[str]:
        return [e.attrs["phase"] for e in self.events]

    async def until(self, phase: str, timeout_s: float = 30.0, count: int = 1) -> None:
        async with asyncio.timeout(timeout_s):
            while self.phases().count(phase) < count:
                self._new.clear()
                await self._new.wait()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "opt" / "releases").mkdir(parents=True)
    # the gateway's config, which loads: an update checks it before the bundle
    org = 'org = { city = "310100", district = "310106", street = "310106013" }'
    (tmp_path / "opt" / "gw.toml").write_text(f'[gateway]\nid = "gw-1"\n{org}\n')
    return tmp_path / "opt"


def bundle_of(data: bytes) -> Bundle:
    return Bundle(len(data), hashlib.sha256(data).hexdigest(), data, chunk_bytes=CHUNK)


async def test_chunks_are_checked_and_a_restart_resumes_from_disk(root: Path) -> None:
    data = os.urandom(10 * CHUNK + 123)  # 11 chunks, the last one short
    b = bundle_of(data)
    args = b.start_args("u-1")
    topic = f"{BASE}/update/u-1"
    async with Gateway(root) as gw:
        answer = await gw.start(args)
        assert (answer["phase"], answer["count"], answer["missing"], answer["table"]) == (
            "receiving", 11, [[0, 10]], False
        )  # fmt: skip
        assert answer["topic"] == topic
        await gw.ru.on_chunk(f"{topic}/0", b.chunk(0))  # before the table: dropped
        await gw.ru.on_chunk(f"{topic}/table", b.table()[:-1] + b"x")  # not the signed table
        await gw.ru.on_chunk(f"{topic}/table", b.table())
        await gw.ru.on_chunk(f"{topic}/1", b.chunk(2))  # another chunk's bytes
        await gw.ru.on_chunk(f"{topic}/10", b.chunk(10) + b"!")  # too long
        await gw.ru.on_chunk(f"{BASE}/update/u-2/3", b.chunk(3))  # not this update
        await gw.ru.on_chunk(f"{topic}/11", b.chunk(3))  # out of range
        await gw.ru.on_chunk(f"{topic}/-1", b.chunk(3))
        for i in (0, 1, 2, 5, 10, 2):  # the second 2 is a repeat
            await gw.ru.on_chunk(f"{topic}/{i}", b.chunk(i))
        assert gw.ru.dropped == 8 and gw.ru.chunks == 5
        answer = await gw.start(args)  # again: the same transfer, what is missing
        assert answer["missing"] == [[3, 4], [6, 9]] and answer["missing_chunks"] == 6
        assert answer["received_bytes"] == 4 * CHUNK + 123
    # A new process on the same disk: the chunks are found again from their hashes.
    async with Gateway(root) as gw:
        answer = await gw.start(args)
        assert answer["missing"] == [[3, 4], [6, 9]] and answer["table"] is True
        for i in (3, 4, 6, 7, 8, 9):
            await gw.ru.on_chunk(f"{topic}/{i}", b.chunk(i))
        # complete and hash-checked: applying refuses what is not a bundle, and says why
        await gw.until("failed")
        assert gw.phases()[-3:] == ["verifying", "applying", "failed"], gw.phases()
        assert "not a readable .tar.gz" in gw.events[-1].attrs["reason"]
        assert gw.events[-1].kind == "software_update" and gw.events[-1].device_id == "gw-1"
        assert not (root / "update" / "transfer" / "bundle.part").exists()
        # the same id once more starts over
        again = await gw.start(args)
        assert again["phase"] == "receiving" and again["received_bytes"] == 0


async def test_the_whole_hash_is_checked(root: Path) -> None:
    data = os.urandom(3 * CHUNK)
    b = bundle_of(data)
    args = {**b.start_args("u-1"), "sha256": hashlib.sha256(b"something else").hexdigest()}
    async with Gateway(root) as gw:
        await gw.start(args)
        for name in ("table", "0", "1", "2"):
            await gw.ru.on_chunk(
                f"{BASE}/update/u-1/{name}", b.table() if name == "table" else b.chunk(int(name))
            )
        await gw.until("failed")
        assert "SHA-256 of the whole bundle does not match" in gw.events[-1].attrs["reason"]


async def test_a_transfer_moved_to_another_topic_keeps_its_chunks(root: Path) -> None:
    """The command destination moved (gateway/uplinks.py): chunks are taken on the new topic only,
    the ones already written count, and the answer names the new topic."""
    b = bundle_of(os.urandom(3 * CHUNK))
    async with Gateway(root) as gw:
        await gw.start(b.start_args("u-1"))
        for name in ("table", "0"):
            await gw.ru.on_chunk(f"{BASE}/update/u-1/{name}", b.table() if name == "table" else b.chunk(0))
        gw.ru.move_to("district/gw-1")
        assert gw.ru.chunk_filter == "district/gw-1/update/+/+"
        await gw.ru.on_chunk(f"{BASE}/update/u-1/1", b.chunk(1))  # the old topic: not taken
        answer = await gw.start(b.start_args("u-1"))
        assert answer["topic"] == "district/gw-1/update/u-1"
        assert (answer["missing"], gw.ru.dropped) == ([[1, 2]], 1)
        for i in (1, 2):
            await gw.ru.on_chunk(f"district/gw-1/update/u-1/{i}", b.chunk(i))
        await gw.until("failed")
        assert "not a readable .tar.gz" in gw.events[-1].attrs["reason"]  # the whole hash matched


async def test_refusals_before_any_byte(root: Path, tmp_path: Path) -> None:
    b = bundle_of(os.urandom(CHUNK))

    async def refused(gw: Gateway, args: dict[str, Any]) -> tuple[RejectReason, str]:
        with pytest.raises(CommandRejectedError) as err:
            await gw.start(args)
        return err.value.reason, err.value.detail

    async with Gateway(root, max_bundle_bytes=2 << 20) as gw:
        reason, detail = await refused(gw, {**b.start_args("u-1"), "size": 3 << 20})
        assert reason == RejectReason.NO_SPACE and "max_bundle_bytes" in detail
        reason, detail = await refused(gw, {**b.start_args("u-1"), "chunk_bytes": 1 << 21})
        assert reason == RejectReason.BAD_VALUE and "chunk_bytes" in detail
        reason, _ = await refused(gw, {**b.start_args("u 1")})
        assert reason == RejectReason.BAD_VALUE
        reason, _ = await refused(gw, {**b.start_args("u-1"), "url": "file:///etc/passwd"})
        assert reason == RejectReason.BAD_VALUE
        # URLs urllib refuses on every attempt (the download retried them for ever): refused now.
        for url in (
            "http://exa mple/b",
            "http:///no-host",
            "http://ex\x01ample/",
            "http://h:99999/x",
            "http://h:x/",
        ):
            reason, detail = await refused(gw, {**b.start_args("u-1"), "url": url})
            assert reason == RejectReason.BAD_VALUE and "with a host" in detail, url
    async with Gateway(root) as gw:  # 8 x 9 MiB > the 64 MiB budget
        reason, detail = await refused(gw, {**b.start_args("u-1"), "size": 9 << 20})
        assert reason == RejectReason.NO_SPACE and "disk_budget_bytes is 67108864" in detail
    async with Gateway(root, min_free_bytes=1 << 60) as gw:
        reason, detail = await refused(gw, b.start_args("u-1"))
        assert reason == RejectReason.NO_SPACE and "kept free" in detail
    assert not (root / "update" / "transfer").exists()
    # An update the watchdog is confirming: busy.
    state = {"phase": "confirming", "to": "1.0.1", "watchdog_pid": os.getpid(), "boot_id": boot_id()}
    (root / "update").mkdir()
    (root / "update" / "state.json").write_text(json.dumps(state))
    async with Gateway(root) as gw:
        reason, detail = await refused(gw, b.start_args("u-1"))
        assert reason == RejectReason.BUSY and "1.0.1" in detail
    # Not an install root (a gateway installed from a wheel, not a bundle).
    async with Gateway(tmp_path / "elsewhere") as gw:
        reason, detail = await refused(gw, b.start_args("u-1"))
        assert reason == RejectReason.BAD_VALUE and "install root" in detail


async def test_chunks_over_the_rate_are_dropped(root: Path) -> None:
    b = bundle_of(os.urandom(40 * CHUNK))
    async with Gateway(root, max_chunks_per_s=10) as gw:
        await gw.start(b.start_args("u-1"))
        await gw.ru.on_chunk(f"{BASE}/update/u-1/table", b.table())
        for i in range(40):
            await gw.ru.on_chunk(f"{BASE}/update/u-1/{i}", b.chunk(i))
        # a burst of at most one second's worth (the table took one), the rest dropped
        assert 5 <= gw.ru.chunks <= 15 and gw.ru.dropped == 40 - gw.ru.chunks
        assert (await gw.start(b.start_args("u-1")))["missing_chunks"] == 40 - gw.ru.chunks


async def test_a_url_serving_more_than_announced_fails(root: Path, tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    (served / "b.tar.gz").write_bytes(os.urandom(50_000))
    async with Gateway(root) as gw:
        with http_folder(served) as base:
            b = Bundle(40_000, hashlib.sha256(b"x").hexdigest(), url=f"{base}/b.tar.gz")
            answer = await gw.start(b.start_args("u-1"))
            assert answer["phase"] == "downloading" and answer["url"].endswith("/b.tar.gz")
            await gw.until("failed")
        assert "more than the announced 40000 bytes" in gw.events[-1].attrs["reason"]
        assert not (root / "update" / "transfer" / "bundle.part").exists()


class Origin:
    """A loopback HTTP server of one bundle at any path, with `Range`; `status[path]` answers that
    status instead, and `/drop` cuts its first answer off in the middle of its chunked body. Every
    request is kept as (path, Range header)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.status: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.asked = threading.Event()
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                origin.requests.append((self.path, self.headers.get("Range", "")))
                origin.asked.set()
                origin.answer(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, h: http.server.BaseHTTPRequestHandler) -> None:
        if h.path in self.status:
            h.send_response(self.status[h.path])
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif h.path == "/drop" and self.paths().count("/drop") == 1:
            h.send_response(200)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()  # one chunk longer than a read block, then a chunk cut off
            h.wfile.write(b"%x\r\n" % 70_000 + self.data[:70_000] + b"\r\n")
            h.wfile.write(b"%x\r\n" % 100_000 + self.data[70_000:80_000])
            h.wfile.flush()
            h.close_connection = True
        else:
            m = re.fullmatch(r"bytes=([0-9]+)-", h.headers.get("Range", ""))
            start = int(m.group(1)) if m else 0
            h.send_response(206 if start else 200)
            if start:
                h.send_header("Content-Range", f"bytes {start}-{len(self.data) - 1}/{len(self.data)}")
            h.send_header("Content-Length", str(len(self.data) - start))
            h.end_headers()
            h.wfile.write(self.data[start:])

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    async def until_asked(self) -> None:
        assert await asyncio.to_thread(self.asked.wait, 10), "no request"

    def __enter__(self) -> Origin:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def url_args(data: bytes, url: str) -> dict[str, Any]:
    return Bundle(len(data), hashlib.sha256(data).hexdigest(), url=url).start_args("u-1")


@pytest.mark.parametrize("status", [403, 404])
async def test_a_refused_url_fails_and_a_fresh_url_starts_again(root: Path, status: int) -> None:
    data = os.urandom(200_000)
    with Origin(data) as origin:
        origin.status["/expired"] = status
        async with Gateway(root) as gw:
            await gw.start(url_args(data, f"{origin.base}/expired"))
            await gw.until("failed", timeout_s=10)  # at once: an expired pre-signed URL does not get better
            reason = gw.events[-1].attrs["reason"]
            assert reason.startswith(f"download: HTTP status {status} "), reason
            assert (await gw.ru.actions()["update_status"].handler({}, CALLER))["reason"] == reason
            assert origin.paths() == ["/expired"]  # not retried
            # The platform gives a fresh URL with the same update_id: a new download from it.
            answer = await gw.start(url_args(data, f"{origin.base}/fresh"))
            assert answer["phase"] == "downloading" and answer["url"].endswith("/fresh")
            await gw.until("failed", timeout_s=10, count=2)
        assert gw.phases()[-3:] == ["verifying", "applying", "failed"], gw.phases()  # the hash matched
        assert origin.paths() == ["/expired", "/fresh"]


async def test_a_fresh_url_is_taken_by_a_download_in_progress(root: Path) -> None:
    data = os.urandom(200_000)
    with Origin(data) as origin:
        origin.status["/busy"] = 503  # the server's trouble: retried with back-off
        async with Gateway(root) as gw:
            await gw.start(url_args(data, f"{origin.base}/busy"))
            await origin.until_asked()
            again = await gw.start(url_args(data, f"{origin.base}/busy"))  # the same: nothing changes
            assert (again["phase"], again["url"], gw.phases()) == ("downloading", f"{origin.base}/busy",
                                                                   ["downloading"])  # fmt: skip
            answer = await gw.start(url_args(data, f"{origin.base}/fresh"))
            assert answer["phase"] == "downloading" and answer["url"] == f"{origin.base}/fresh"
            meta = json.loads((root / "update" / "transfer" / "meta.json").read_text())
            assert meta["url"] == f"{origin.base}/fresh"  # a restart goes on from it too
            await gw.until("failed", timeout_s=10)
        assert gw.phases() == ["downloading", "verifying", "applying", "failed"]
        assert set(origin.paths()) == {"/busy", "/fresh"} and origin.paths()[-1] == "/fresh"


async def test_a_connection_cut_off_mid_body_is_resumed(root: Path) -> None:
    data = os.urandom(200_000)
    with Origin(data) as origin:
        async with Gateway(root) as gw:
            await gw.start(url_args(data, f"{origin.base}/drop"))
            await gw.until("failed", timeout_s=10)
        assert gw.phases() == ["downloading", "verifying", "applying", "failed"]  # all bytes, in order
        assert origin.requests == [("/drop", ""), ("/drop", "bytes=65536-")]  # from the first read block


async def test_an_unexpected_error_fails_the_download(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: RemoteUpdate, t: object, url: str) -> bool:
        raise RuntimeError("a bug in the download")

    monkeypatch.setattr(RemoteUpdate, "_fetch", broken)
    data = os.urandom(1000)
    async with Gateway(root) as gw:
        await gw.start(url_args(data, "http://127.0.0.1:9/never"))
        await gw.until("failed", timeout_s=10)
    assert gw.events[-1].attrs["reason"] == "download: RuntimeError: a bug in the download"
    assert "update u-1: download" in caplog.text and "a bug in the download" in caplog.text


async def test_update_start_before_the_resume_makes_one_download(root: Path) -> None:
    data = os.urandom(200_000)
    args = url_args(data, "")
    with Origin(data) as origin:
        args["url"] = f"{origin.base}/b"
        origin.status["/b"] = 503
        async with Gateway(root) as gw:  # a download that did not get far before a restart
            await gw.start(args)
            await origin.until_asked()
        del origin.status["/b"]
        origin.requests.clear()
        gw = Gateway(root)
        gw.task = asyncio.create_task(gw.ru.run())
        answer = await gw.start(args)  # the platform's update_start before run() read the disk
        assert answer["phase"] == "downloading"
        await gw.until("failed", timeout_s=10)
        await asyncio.sleep(0.3)  # a second download (the defect: the resume's) would have asked by now
        await gw.__aexit__()
    assert origin.paths() == ["/b"] and gw.phases().count("verifying") == 1, (origin.requests, gw.phases())


async def test_update_start_during_the_resume_waits_for_it(root: Path) -> None:
    b = bundle_of(os.urandom(64 * CHUNK))
    topic = f"{BASE}/update/u-1"
    async with Gateway(root) as gw:
        await gw.start(b.start_args("u-1"))
        await gw.ru.on_chunk(f"{topic}/table", b.table())
        for i in range(b.count - 1):  # all but the last one
            await gw.ru.on_chunk(f"{topic}/{i}", b.chunk(i))
        assert gw.ru.chunks == b.count - 1
    gw = Gateway(root)
    gw.task = asyncio.create_task(gw.ru.run())
    await asyncio.sleep(0)  # run() is reading the transfer on disk (in a thread)
    answer = await gw.start(b.start_args("u-1"))  # answered once the chunks on disk are checked
    await gw.__aexit__()
    assert (answer["missing"], answer["received_bytes"]) == ([[b.count - 1, b.count - 1]], b.size - CHUNK)


async def test_the_space_estimate_counts_a_copy_of_the_outbox(root: Path, tmp_path: Path) -> None:
    b = bundle_of(os.urandom(CHUNK))
    outbox = tmp_path / "gw.db"
    with outbox.open("wb") as f:  # sparse: as large as the free space and a byte, using none of it
        f.truncate(shutil.disk_usage(root).free + 1)
    async with Gateway(root) as gw:
        gw.ru.outbox = outbox  # the gateway's outbox (uplinks.py gives [store] path)
        with pytest.raises(CommandRejectedError) as err:
            await gw.start(b.start_args("u-1"))
        assert err.value.reason == RejectReason.NO_SPACE and "for a copy of the outbox" in err.value.detail
        outbox.unlink()
        assert (await gw.start(b.start_args("u-1")))["phase"] == "receiving"


class FillingDisk:
    """The part file on a disk that fills after `room` bytes: a write past it fails with ENOSPC."""

    def __init__(self, f: Any, room: int) -> None:
        self.f, self.room = f, room

    def __enter__(self) -> FillingDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()

    def seek(self, offset: int) -> int:
        return int(self.f.seek(offset))

    def truncate(self) -> int:
        return int(self.f.truncate())

    def write(self, data: bytes) -> int:
        if self.f.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return int(self.f.write(data))


async def test_a_download_that_fills_the_disk_fails_and_frees_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(200_000)
    part = root / "update" / "transfer" / "bundle.part"
    real_open = Path.open

    def open_(self: Path, *args: Any, **kwargs: Any) -> Any:
        f = real_open(self, *args, **kwargs)
        return FillingDisk(f, 100_000) if self == part else f

    monkeypatch.setattr(Path, "open", open_)
    with Origin(data) as origin:
        async with Gateway(root) as gw:
            await gw.start(url_args(data, f"{origin.base}/b"))
            await gw.until("failed", timeout_s=5)  # at once: retrying kept the disk full for ever
        reason = gw.events[-1].attrs["reason"]
        assert reason.startswith("download: no_space: No space left on device at 65536 of 200000"), reason
        assert not part.exists()
        assert origin.paths() == ["/b"]


async def test_the_running_gateway_finishes_an_update_whose_watchdog_died(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 1.0.1 runs unconfirmed, its watchdog killed on this boot: nothing else would finish the update
    # until a reboot, which would then put back an outbox copy from long before.
    for version in ("1.0.0", "1.0.1"):
        (root / "releases" / version / "bin").mkdir(parents=True)
        (root / "releases" / version / "citynerve-release.json").write_text(json.dumps({"version": version}))
    started = root / "watchdog-started"
    cn = root / "releases" / "1.0.0" / "bin" / "citynerve"  # the old release's watchdog, a stand-in here
    cn.write_text(f'#!/bin/sh\necho "$@" > {started}\n')
    cn.chmod(0o755)
    state = {"phase": "confirming", "from": "1.0.0", "to": "1.0.1", "boot_id": boot_id(),
             "watchdog_pid": 2**22 + 7, "watch_lock": True,
             "service": {"kind": "process", "config": str(root / "gw.toml")}}  # fmt: skip
    (root / "update").mkdir()
    (root / "update" / "state.json").write_text(json.dumps(state))
    monkeypatch.setattr(remote, "WATCHDOG_CHECK_S", 0.05)
    async with Gateway(root) as gw:
        for _ in range(200):  # a separate process writes it: polled, 10 s at most
            if started.exists() and started.read_text():
                break
            await asyncio.sleep(0.05)
        assert started.read_text().split() == ["update", "watch", "--root", str(root)]
        # meanwhile update_start is busy (the new watchdog is starting), not a second update
        with pytest.raises(CommandRejectedError) as err:
            await gw.start(bundle_of(os.urandom(CHUNK)).start_args("u-1"))
        assert err.value.reason == RejectReason.BUSY
    assert json.loads((root / "update" / "state.json").read_text())["watchdog_spawns"] == 1
