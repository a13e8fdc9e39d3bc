"""The bundle's transfer for a platform-started software update (gateway/release/remote.py): the
`Transfer` record kept in `update/transfer/meta.json`, chunks received over MQTT (each checked against
the signed table) and the resumable download from a URL. `ChunkedTransfer` is a mixin of
`RemoteUpdate`, kept apart so each module stays small; the attributes below are RemoteUpdate's."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import http.client
import logging
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from citynerve.gateway.api import PermanentError
from citynerve.gateway.release.config import UpdateConfig

log = logging.getLogger("citynerve.update")

MIN_CHUNK_BYTES = 4096
MAX_CHUNKS = 65536
MAX_RANGES = 64  # missing ranges listed in one answer (the rest follow once these arrive)
READ_BLOCK = 64 * 1024
_INDEX_RE = re.compile(r"^[0-9]{1,6}$")
# A download that stops with one of these resumes after a back-off; an HTTP status is one of them only
# when it may pass (5xx, 408, 429): any other (an expired pre-signed URL's 403, a 404) fails the update,
# and so does a full disk (NO_SPACE).
RETRIED = (OSError, urllib.error.URLError, http.client.HTTPException, ValueError)
RETRIED_STATUS = (408, 429)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a disk that is full is not retried: it fails the transfer
RETRY_MIN_S = 1.0  # the back-off between download attempts: doubled up to RETRY_MAX_S
RETRY_MAX_S = 30.0


class TransferError(PermanentError):
    """A download that cannot go on (the server sends more than announced, a bad status)."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


@dataclass
class Transfer:
    """The one update in progress (or the last one), as kept in `update/transfer/meta.json`."""

    update_id: str
    size: int
    sha256: str
    chunk_bytes: int = 0  # 0: from a URL
    chunks_sha256: str = ""
    url: str = ""
    phase: str = "receiving"
    reason: str = ""
    command_id: str = ""
    key_id: str = ""
    started: float = 0.0
    release_from: str | None = None
    release_to: str | None = None
    reported: bool = False
    # not persisted: derived from the data on load
    have: bytearray = field(default_factory=bytearray, repr=False)
    table: bytes | None = field(default=None, repr=False)
    received: int = 0
    progress_step: int = 0
    progress_t: float = 0.0  # monotonic: the last new byte (transfer_give_up_s counts from it)

    @property
    def count(self) -> int:
        return math.ceil(self.size / self.chunk_bytes) if self.chunk_bytes else 0

    def chunk_len(self, index: int) -> int:
        return min(self.chunk_bytes, self.size - index * self.chunk_bytes)

    def meta(self) -> dict[str, Any]:
        skip = ("have", "table", "received", "progress_step", "progress_t")
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def missing(self) -> tuple[list[list[int]], int]:
        """Up to MAX_RANGES [first, last] index ranges not received, and how many chunks are missing."""
        ranges: list[list[int]] = []
        total = 0
        start = None
        for i in range(self.count + 1):
            absent = i < self.count and not self.have[i]
            if absent:
                total += 1
                if start is None:
                    start = i
            elif start is not None:
                if len(ranges) < MAX_RANGES:
                    ranges.append([start, i - 1])
                start = None
        return ranges, total


class ChunkedTransfer:
    """Chunks over MQTT and the download from a URL, into the part file of the update in progress."""

    config: UpdateConfig
    topic_base: str
    folder: Path
    dropped: int
    chunks: int
    _t: Transfer | None
    _fd: int | None
    _lock: asyncio.Lock
    _mono: Callable[[], float]
    _tokens: float
    _tokens_t: float
    _new_url: asyncio.Event

    def _begin(self, work: Any) -> None:
        raise NotImplementedError

    async def _finish(self, t: Transfer) -> None:
        raise NotImplementedError

    def _emit(self, t: Transfer, **extra: Any) -> None:
        raise NotImplementedError

    def _set(self, t: Transfer, phase: str, reason: str = "", **extra: Any) -> None:
        raise NotImplementedError

    def _close_fd(self) -> None:
        raise NotImplementedError

    @property
    def _part(self) -> Path:
        return self.folder / "bundle.part"

    # -- chunks -------------------------------------------------------------------------------

    async def on_chunk(self, topic: str, payload: bytes) -> None:
        """One message on the chunk topic: checked, written or dropped (never raises)."""
        try:
            if not self._admit():
                self.dropped += 1
                return
            if not self._chunk(topic, payload):
                self.dropped += 1
        except Exception:  # a bad chunk (or a full disk) must not end the uplink's session
            self.dropped += 1
            log.exception("update chunk on %s", topic[-120:])

    def _admit(self) -> bool:
        rate = self.config.max_chunks_per_s
        now = time.monotonic()
        self._tokens = min(rate, self._tokens + (now - self._tokens_t) * rate)
        self._tokens_t = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _chunk(self, topic: str, payload: bytes) -> bool:
        t = self._t
        prefix = f"{self.topic_base}/update/"
        if t is None or t.phase != "receiving" or not t.chunk_bytes or not topic.startswith(prefix):
            return False
        uid, _, index = topic[len(prefix) :].partition("/")
        if uid != t.update_id:
            return False
        if index == "table":
            if t.table is not None or len(payload) != 32 * t.count:
                return False
            if hashlib.sha256(payload).hexdigest() != t.chunks_sha256:
                return False
            tmp = self.folder / "table.bin.tmp"
            tmp.write_bytes(payload)
            os.replace(tmp, self.folder / "table.bin")
            t.table = bytes(payload)
            t.progress_t = self._mono()
            return True
        if t.table is None or not _INDEX_RE.match(index):
            return False
        i = int(index)
        if i >= t.count or t.have[i] or len(payload) != t.chunk_len(i):
            return False
        if hashlib.sha256(payload).digest() != t.table[32 * i : 32 * i + 32]:
            return False
        assert self._fd is not None
        os.pwrite(self._fd, payload, i * t.chunk_bytes)
        t.have[i] = 1
        t.received += len(payload)
        t.progress_t = self._mono()
        self.chunks += 1
        step = 4 * t.received // t.size  # a progress event at each quarter
        if step > t.progress_step and t.received < t.size:
            t.progress_step = step
            self._emit(t)
        if t.received == t.size:
            self._begin(self._finish(t))
        return True

    async def _expire(self) -> None:
        """Fail a chunked transfer with no new chunk for transfer_give_up_s (the platform stopped
        sending): its part file, reserved for the whole bundle, is not kept until the next
        update_start. Looked at by the run loop, and at start (the idle time counts across restarts)."""
        async with self._lock:
            t = self._t
            bound = self.config.transfer_give_up_s
            if (
                t is None
                or t.phase != "receiving"
                or t.received == t.size
                or self._mono() - t.progress_t < bound
            ):
                return
            t.phase = "failed"  # from here no chunk is taken
            self._close_fd()
            try:
                await asyncio.to_thread(self._part.unlink, True)  # removed before it is reported
                self._set(t, "failed", f"no new chunk for {bound:.0f} s at {t.received} of {t.size} bytes; "
                          "the partial transfer is removed")  # fmt: skip
            except Exception:  # a disk error must not end the update's task
                log.exception("update %s: giving up the transfer", t.update_id)

    # -- download from a URL ------------------------------------------------------------------

    async def _download(self, t: Transfer) -> None:
        """Fetch `t.url` until complete (with back-off), then verify and apply; never raises."""
        try:
            done = await self._fetch_all(t)
        except Exception as err:  # a bug or a surprise: the platform sees it (never a silent stall)
            log.exception("update %s: download", t.update_id)
            self._set(t, "failed", f"download: {type(err).__name__}: {err}")
            return
        if done:
            await self._finish(t)

    async def _fetch_all(self, t: Transfer) -> bool:
        """True once the part file is complete, False when the transfer failed: a permanent error
        (TransferError, a full disk) or no new byte for transfer_give_up_s (a server gone, a URL
        that answers 503 for good: it used to retry, and log, every 30 s for ever)."""
        delay = RETRY_MIN_S
        tries = 0
        best = await asyncio.to_thread(self._part_bytes, t)  # what a resume starts from is no progress
        while True:
            url = t.url
            self._new_url.clear()  # set by update_start with a new URL: retry at once, from there
            try:
                if await asyncio.to_thread(self._fetch, t, url):
                    return True
                last = f"the answer ended at {t.received} bytes"
            except TransferError as err:
                if t.url == url:
                    self._set(t, "failed", f"download: {err.reason}")
                    await asyncio.to_thread(self._part.unlink, True)
                    return False
                log.warning("update %s: %s; trying the new URL", t.update_id, err.reason)
                last = err.reason
            except RETRIED as err:
                if isinstance(err, OSError) and err.errno in NO_SPACE:
                    # Retrying would keep the disk full (the outbox on it evicting telemetry) for ever.
                    await asyncio.to_thread(self._part.unlink, True)  # removed before it is reported
                    self._set(t, "failed", f"download: no_space: {err.strerror} at {t.received} of {t.size} "
                              "bytes; the partial download is removed")  # fmt: skip
                    return False
                last = _why(err)
            bound = self.config.transfer_give_up_s
            if t.received > best:
                best, t.progress_t = t.received, self._mono()
            elif self._mono() - t.progress_t >= bound:
                await asyncio.to_thread(self._part.unlink, True)
                removed = "; the partial download is removed" if t.received else ""
                self._set(t, "failed", f"download: no progress from {_host(url)} for {bound:.0f} s "
                          f"(last: {last[:200]}) at {t.received} of {t.size} bytes{removed}")  # fmt: skip
                return False
            tries += 1
            if tries & (tries - 1) == 0:  # 1, 2, 4, 8, ...: a dead server logs ~10 lines in 6 h, not 720
                log.warning("update %s: download from %s stopped at %d of %d bytes (%s); retry %d in %.0f s",
                            t.update_id, _host(url), t.received, t.size, last[:200], tries,
                            delay)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_url.wait(), delay)
            delay = RETRY_MIN_S if self._new_url.is_set() else min(RETRY_MAX_S, delay * 2)

    def _part_bytes(self, t: Transfer) -> int:
        """The bytes a download resumes from (none when the part file is longer than the bundle)."""
        size = self._part.stat().st_size if self._part.exists() else 0
        return size if size <= t.size else 0

    def _fetch(self, t: Transfer, url: str) -> bool:
        """Download the rest of `url` into the part file (from where it stopped); True when complete."""
        offset = self._part.stat().st_size if self._part.exists() else 0
        if offset > t.size:
            self._part.unlink()
            offset = 0
        t.received = offset
        if offset == t.size:
            return True
        req = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            resp = urllib.request.urlopen(req, timeout=self.config.download_timeout_s)
        except urllib.error.HTTPError as err:
            err.close()
            if err.code >= 500 or err.code in RETRIED_STATUS:
                raise  # the server's trouble, or too busy now: retried
            raise TransferError(url, f"HTTP status {err.code} {err.reason}") from err
        with resp:
            if resp.status == 200 and offset:
                offset = 0  # the server ignored the range: from the start
            elif resp.status not in (200, 206):
                raise TransferError(url, f"HTTP status {resp.status}")
            with self._part.open("r+b" if offset else "wb") as out:
                out.seek(offset)
                out.truncate()
                while block := resp.read(READ_BLOCK):
                    offset += len(block)
                    if offset > t.size:
                        raise TransferError(url, f"more than the announced {t.size} bytes")
                    out.write(block)
                    t.received = offset
        return offset == t.size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _why(err: BaseException) -> str:
    """What stopped a download attempt, for its log line and reason: never the URL (a pre-signed URL's
    query is a credential)."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP status {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return f"{type(err).__name__}: {err}"


def _host(url: str) -> str:
    """The host (and port) of a download URL: what a log line or a reason may name of it."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{parts.port}" if parts.port else host
