"""Software updates the platform starts: the bundle in chunks over MQTT or from a URL, then the
signed A/B update of `citynerve update apply` (docs/fleet.md, "Software update").

Flow (every step is reported as a `software_update` event on the events lane, durable in the outbox):

1. `update_start` (signed command, permission `update`) announces the bundle: `update_id`, `size`,
   `sha256` of the whole, and either `chunk_bytes` + `chunks_sha256` (the SHA-256 of the table of
   every chunk's 32-byte SHA-256) or a `url` (http or https). Refused before any byte moves when the
   bundle is larger than `max_bundle_bytes` or would not fit the disk budget (`no_space`). The space
   of the download is reserved at once (fallocate), so a disk filling up meanwhile cannot break it.
2. Chunks arrive on `<prefix>/<gateway>/update/<update_id>/<index>` (raw bytes) after the table on
   `.../table`. Each is checked against the table (so against the signed command) before it is
   written at its offset; a chunk that is unknown, repeated, of the wrong size or hash, or over the
   rate limit is dropped and counted. What the gateway has is derived from the data itself (every
   chunk's hash against the table), so a restart or a disconnect loses nothing: the platform sends
   `update_start` again (same id) and gets the `missing` ranges back.
3. All chunks (or the whole download): the SHA-256 of the whole is checked, then `platform_apply`
   verifies the release signature against the gateway's release key (the command's signature says
   who asked, the bundle's says what runs), installs it beside the running release and hands over
   to the update watchdog, which restarts the service on the new release.
4. The gateway that runs afterwards (the new release, or the old one after a rollback) reads the
   watchdog's verdict and reports it once: `confirmed`, `rolled-back` (with the reason) or `failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from citynerve.gateway.api import Event, EventState, Severity
from citynerve.gateway.release.config import UpdateConfig
from citynerve.gateway.release.outbox_copy import outbox_copy_bytes
from citynerve.gateway.release.service import service_from
from citynerve.gateway.release.state import IN_PROGRESS, TERMINAL, read_state, watchdog_alive
from citynerve.gateway.release.transfer import (
    MAX_CHUNKS,
    MIN_CHUNK_BYTES,
    ChunkedTransfer,
    Transfer,
    TransferError,
    _sha256,
)
from citynerve.gateway.release.update import (
    INSTALL_FACTOR,
    platform_apply,
    platform_report,
    recover_interrupted,
)
from citynerve.gateway.uplink.commands import Caller, RemoteAction
from citynerve.gateway.uplink.encoding import RejectReason
from citynerve.gateway.uplink.errors import CommandRejectedError
from citynerve.gateway.uplink.permissions import Permission

__all__ = ["UPDATE_KIND", "RemoteUpdate", "Transfer", "TransferError"]  # Transfer*: release/transfer.py

log = logging.getLogger("citynerve.update")

UPDATE_KIND = "software_update"
DISK_FACTOR = 1 + INSTALL_FACTOR  # the download, then what `apply` checks for: unpacked copy, release
MAX_URL_CHARS = 2048
WATCHDOG_CHECK_S = 30.0  # how often the running gateway looks for an update whose watchdog died
RECEIVING = ("receiving", "downloading")
WORKING = ("verifying", "applying")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


class RemoteUpdate(ChunkedTransfer):
    """The gateway's side of platform-driven updates: commands, chunks, download, apply, report."""

    def __init__(
        self,
        config: UpdateConfig,
        *,
        config_path: Path,
        gateway_id: str,
        topic_base: str,
        events: Callable[[Event], None],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        outbox: Path | None = None,
    ) -> None:
        self.config = config
        self.outbox = outbox  # copied before an update that migrates it: counted in the space needed
        self.config_path = config_path
        self.gateway_id = gateway_id
        self.topic_base = topic_base
        self.folder = config.root / "update" / "transfer"
        self._events = events
        self._clock = clock
        self._mono = monotonic  # how long a transfer made no progress (transfer_give_up_s)
        self._t: Transfer | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._new_url = asyncio.Event()
        self._fd: int | None = None
        self._tokens = config.max_chunks_per_s  # a full bucket: one second's worth at once
        self._tokens_t = time.monotonic()
        self.dropped = 0
        self.chunks = 0

    # -- wiring -------------------------------------------------------------------------------

    @property
    def chunk_filter(self) -> str:
        return f"{self.topic_base}/update/+/+"

    def move_to(self, topic_base: str) -> None:
        """Chunks on `topic_base` from now on: the command destination moved (another topic prefix,
        another destination), its new uplink subscribes there. A transfer in progress keeps every
        chunk it has (they are checked against the table, never the topic); the next answer names
        the new topic with what is missing. Chunks still sent to the old one are not taken."""
        if topic_base == self.topic_base:
            return
        t = self._t
        busy = f" (update {t.update_id} {t.phase})" if t is not None and t.phase in RECEIVING else ""
        log.warning("update chunks on %s/update/... now, not %s%s", topic_base, self.topic_base, busy)
        self.topic_base = topic_base

    def actions(self) -> dict[str, RemoteAction]:
        return {
            "update_start": RemoteAction(Permission.UPDATE, self._start),
            "update_status": RemoteAction(Permission.READ, self._status),
        }

    async def run(self) -> None:
        """Pick up where the last process left off, then keep the work task until cancelled; meanwhile
        finish any update whose watchdog died while the box ran on (update.recover_interrupted)."""
        try:
            await self._resume()
            await self._expire()
            while True:
                await asyncio.sleep(WATCHDOG_CHECK_S)
                await self._recover()
                await self._expire()
        finally:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
            self._close_fd()

    def status(self) -> dict[str, Any] | None:
        """For `citynerve status`: the update in progress or the last one."""
        t = self._t
        if t is None:
            return None
        return {"update_id": t.update_id, "phase": t.phase, "received_bytes": t.received, "size": t.size,
                "reason": t.reason[:200], "dropped_chunks": self.dropped}  # fmt: skip

    # -- persistence --------------------------------------------------------------------------

    def _save(self, t: Transfer) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "meta.json.tmp"
        with tmp.open("w") as f:
            json.dump(t.meta(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / "meta.json")

    def _load(self) -> Transfer | None:
        try:
            data = json.loads((self.folder / "meta.json").read_text())
            t = Transfer(**{k: data[k] for k in Transfer.__dataclass_fields__ if k in data})
        except (OSError, ValueError, TypeError) as err:
            if (self.folder / "meta.json").exists():
                log.warning("update transfer state unreadable (%s): forgotten", err)
            return None
        if t.chunk_bytes:
            try:
                table = (self.folder / "table.bin").read_bytes()
            except OSError:
                table = None
            if table is not None and hashlib.sha256(table).hexdigest() == t.chunks_sha256:
                t.table = table
        return t

    def _scan(self, t: Transfer) -> None:
        """Which chunks are on disk: each chunk's data against its hash in the table (thread)."""
        t.have = bytearray(t.count)
        t.received = 0
        if t.table is None or not self._part.exists():
            return
        with self._part.open("rb") as f:
            for i in range(t.count):
                data = f.read(t.chunk_len(i))
                if hashlib.sha256(data).digest() == t.table[32 * i : 32 * i + 32]:
                    t.have[i] = 1
                    t.received += len(data)

    def _idle_s(self) -> float:
        """Seconds since the transfer's files were last written (wall clock: it spans a restart or a
        power cut; a clock set back at boot counts as no time)."""
        times = [f.stat().st_mtime for f in self.folder.iterdir() if f.is_file()]
        return self._clock() - max(times, default=self._clock())

    async def _resume(self) -> None:
        async with self._lock:  # an update_start meanwhile waits, then finds what was resumed
            if self._t is None:  # (one that came first has replaced the transfer on disk)
                await self._resume_from_disk()

    async def _resume_from_disk(self) -> None:
        t = await asyncio.to_thread(self._load)
        if t is None:
            return
        self._t = t
        if t.phase in RECEIVING:  # idle since its files were last written: a restart does not reset it
            idle = await asyncio.to_thread(self._idle_s)
            t.progress_t = self._mono() - min(max(idle, 0.0), self.config.transfer_give_up_s)
        if t.phase == "receiving":
            await asyncio.to_thread(self._scan, t)
            self._open_fd()
            log.warning("update %s: %d of %d bytes on disk, waiting for the rest", t.update_id, t.received,
                        t.size)  # fmt: skip
            if t.received == t.size:
                self._begin(self._finish(t))
        elif t.phase == "downloading":
            self._begin(self._download(t))
        elif t.phase in WORKING:
            self._begin(self._finish(t))
        elif t.phase == "restarting" or (t.phase in TERMINAL and not t.reported):
            self._begin(self._report(t))

    async def _recover(self) -> str | None:
        try:
            done = await asyncio.to_thread(recover_interrupted, self.config.root)
        except Exception:  # the check must not end the gateway's task group
            log.exception("update: checking for an interrupted update")
            return None
        if done:
            log.warning("update: the watchdog of the update in progress is gone: %s", done)
        return done

    def _begin(self, work: Any) -> None:
        self._task = asyncio.get_running_loop().create_task(work, name="update.work")
        self._task.add_done_callback(_log_end)

    def _open_fd(self) -> None:
        if self._fd is None:
            self._fd = os.open(self._part, os.O_RDWR | os.O_CREAT, 0o600)

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _discard(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
        self._close_fd()
        shutil.rmtree(self.folder, ignore_errors=True)
        self._t = None

    # -- events -------------------------------------------------------------------------------

    def _emit(self, t: Transfer, **extra: Any) -> None:
        attrs: dict[str, Any] = {"update_id": t.update_id, "phase": t.phase, "size": t.size,
                                 "received_bytes": t.received, "sha256": t.sha256}  # fmt: skip
        if t.reason:
            attrs["reason"] = t.reason[:500]
        for k, v in (("from", t.release_from), ("to", t.release_to)):
            if v:
                attrs[k] = v
        attrs.update(extra)
        bad = t.phase in ("failed", "rolled-back")
        self._events(
            Event(
                self.gateway_id,
                UPDATE_KIND,
                EventState.RAISED,
                Severity.WARNING if bad else Severity.INFO,
                self._clock(),
                "update",
                None,
                f"software update {t.update_id}: {t.phase}",
                attrs,
                one_shot=True,
            )
        )
        (log.warning if bad else log.info)("update %s: %s %s", t.update_id, t.phase, t.reason[:200])

    def _set(self, t: Transfer, phase: str, reason: str = "", **extra: Any) -> None:
        t.phase = phase
        t.reason = reason
        self._save(t)
        self._emit(t, **extra)

    # -- commands -----------------------------------------------------------------------------

    def _answer(self, t: Transfer) -> dict[str, Any]:
        out: dict[str, Any] = {
            "update_id": t.update_id, "phase": t.phase, "reason": t.reason[:500], "size": t.size,
            "received_bytes": t.received, "sha256": t.sha256,
        }  # fmt: skip
        if t.chunk_bytes:
            ranges, total = t.missing() if t.have else ([[0, t.count - 1]], t.count)
            out.update(chunk_bytes=t.chunk_bytes, count=t.count, table=t.table is not None,
                       missing=ranges, missing_chunks=total,
                       topic=f"{self.topic_base}/update/{t.update_id}")  # fmt: skip
        else:
            out["url"] = t.url
        if t.phase == "restarting" or t.phase in TERMINAL:
            out["release"] = platform_report(self.config.root)
        return out

    async def _status(self, args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        t = self._t
        if t is None:
            return {"phase": "idle", "release": platform_report(self.config.root)}
        return self._answer(t)

    async def _start(self, args: dict[str, Any], caller: Caller) -> Mapping[str, Any]:
        uid, size, sha, url = args.get("update_id"), args.get("size"), args.get("sha256"), args.get("url")
        if not isinstance(uid, str) or not _ID_RE.match(uid):
            raise CommandRejectedError(RejectReason.BAD_VALUE, "update_id must be a short id")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise CommandRejectedError(RejectReason.BAD_VALUE, "size must be a positive integer (bytes)")
        if not isinstance(sha, str) or not _SHA_RE.match(sha):
            raise CommandRejectedError(RejectReason.BAD_VALUE, "sha256 must be 64 lowercase hex digits")
        chunk_bytes, table_sha = 0, ""
        if url is not None:
            if not _http_url(url):
                raise CommandRejectedError(
                    RejectReason.BAD_VALUE,
                    "url must be an http(s) URL with a host, no spaces or control characters",
                )
        else:
            chunk_arg, table_arg = args.get("chunk_bytes"), args.get("chunks_sha256")
            top = self.config.max_chunk_bytes
            if (
                isinstance(chunk_arg, bool)
                or not isinstance(chunk_arg, int)
                or not (MIN_CHUNK_BYTES <= chunk_arg <= top)
            ):
                raise CommandRejectedError(
                    RejectReason.BAD_VALUE, f"chunk_bytes must be in {MIN_CHUNK_BYTES}..{top}"
                )
            if not isinstance(table_arg, str) or not _SHA_RE.match(table_arg):
                raise CommandRejectedError(
                    RejectReason.BAD_VALUE, "chunks_sha256 must be 64 lowercase hex digits"
                )
            chunk_bytes, table_sha = chunk_arg, table_arg
            if math.ceil(size / chunk_bytes) > MAX_CHUNKS:
                raise CommandRejectedError(RejectReason.BAD_VALUE, f"more than {MAX_CHUNKS} chunks")
        async with self._lock:
            t = self._t
            same = t is not None and t.update_id == uid and t.sha256 == sha
            if t is not None and same and t.phase == "downloading" and url and url != t.url:
                t.url = url  # a fresh URL (the last one expired?): the download goes on from it
                t.progress_t = self._mono()  # with a new transfer_give_up_s
                self._save(t)
                log.info("update %s: download from the new URL of update_start", uid)
                self._new_url.set()
                return self._answer(t)
            if t is not None and same and t.phase != "failed":
                return self._answer(t)  # a resume after a disconnect or restart, or a status check
            if t is not None and (t.phase in WORKING or (t.phase == "restarting" and not t.reported)):
                raise CommandRejectedError(RejectReason.BUSY, f"update {t.update_id} is {t.phase}")
            state = read_state(self.config.root)
            done = None
            if state.get("phase") in IN_PROGRESS and not watchdog_alive(self.config.root, state):
                done = await self._recover()  # interrupted: finished (or handed to a new watchdog) first
                state = read_state(self.config.root)
            if state.get("phase") in IN_PROGRESS:
                why = f" (its watchdog was gone: {done})" if done else ""
                raise CommandRejectedError(
                    RejectReason.BUSY, f"an update to {state.get('to')} is in progress{why}"
                )
            if not (self.config.root / "releases").is_dir():
                raise CommandRejectedError(
                    RejectReason.BAD_VALUE,
                    f"{self.config.root} is not an install root (installed from a bundle?)",
                )
            self._check_space(size)
            self._discard()
            t = Transfer(
                update_id=uid,
                size=size,
                sha256=sha,
                chunk_bytes=chunk_bytes,
                chunks_sha256=table_sha,
                url=url or "",
                phase="downloading" if url else "receiving",
                command_id=caller.command_id,
                key_id=caller.key_id,
                started=self._clock(),
                progress_t=self._mono(),
            )
            t.have = bytearray(t.count)
            self.folder.mkdir(parents=True, exist_ok=True)
            if chunk_bytes:
                self._open_fd()
                assert self._fd is not None
                try:  # the whole download's space now: a disk filling meanwhile cannot break it
                    os.posix_fallocate(self._fd, 0, size)
                except OSError as err:
                    self._discard()
                    raise CommandRejectedError(
                        RejectReason.NO_SPACE, f"cannot reserve {size} bytes: {err}"
                    ) from err
            self._t = t
            self._set(t, t.phase, key=caller.key_id)
            if url:
                self._begin(self._download(t))
            return self._answer(t)

    def _check_space(self, size: int) -> None:
        cfg = self.config
        if size > cfg.max_bundle_bytes:
            raise CommandRejectedError(
                RejectReason.NO_SPACE,
                f"bundle of {size} bytes is larger than max_bundle_bytes {cfg.max_bundle_bytes}",
            )
        need = DISK_FACTOR * size
        if need > cfg.disk_budget_bytes:
            raise CommandRejectedError(
                RejectReason.NO_SPACE,
                f"bundle of {size} bytes needs about {need} bytes on disk; "
                f"disk_budget_bytes is {cfg.disk_budget_bytes}",
            )
        free = shutil.disk_usage(self.config.root).free
        if self._part.exists():
            free += self._part.stat().st_blocks * 512  # the old download goes first
        # A release that migrates the outbox needs a copy of it too (not known before the bundle is
        # here: counted always). Not part of the budget, which bounds the update's own files.
        copy = outbox_copy_bytes(self.outbox) if self.outbox is not None else 0
        if need + copy > free - cfg.min_free_bytes:
            also = f" and {copy} for a copy of the outbox" if copy else ""
            raise CommandRejectedError(
                RejectReason.NO_SPACE,
                f"bundle of {size} bytes needs about {need} bytes on disk{also}; {free} free, "
                f"{cfg.min_free_bytes} kept free",
            )

    # -- verify, apply, report ----------------------------------------------------------------

    async def _finish(self, t: Transfer) -> None:
        try:
            self._close_fd()
            self._set(t, "verifying")
            digest = await asyncio.to_thread(_sha256, self._part)
            if digest != t.sha256:
                self._set(t, "failed", "the SHA-256 of the whole bundle does not match update_start's")
                await asyncio.to_thread(self._part.unlink, True)
                return
            self._set(t, "applying")
            service = service_from(
                {"kind": self.config.service, "config": str(self.config_path)}, self.config.root
            )
            report = await asyncio.to_thread(
                platform_apply, self._part, root=self.config.root, config=self.config_path, service=service,
                request_id=t.update_id, deadline_s=self.config.deadline_s, settle_s=self.config.settle_s,
            )  # fmt: skip
            await asyncio.to_thread(self._part.unlink, True)  # installed (or refused): not needed any more
            if report.get("phase") == "failed":
                self._set(t, "failed", str(report.get("reason") or "refused"))
                return
            t.release_from, t.release_to = report.get("from"), report.get("to")
            self._set(t, "restarting")
        except Exception as err:
            log.exception("update %s", t.update_id)
            self._set(t, "failed", f"{type(err).__name__}: {err}")
            return
        await self._report(t)

    async def _report(self, t: Transfer) -> None:
        """Wait for the watchdog's verdict (the service is restarted meanwhile: usually the next
        process reads it) and report it once."""
        limit = time.monotonic() + 2 * self.config.deadline_s + 180
        while time.monotonic() < limit:
            report = await asyncio.to_thread(platform_report, self.config.root)
            if t.phase in TERMINAL or (report["request_id"] == t.update_id and report["phase"] in TERMINAL):
                if t.phase not in TERMINAL:
                    t.phase, t.reason = report["phase"], report["reason"]
                t.release_from = report.get("from") or t.release_from
                t.release_to = report.get("to") or t.release_to
                t.reported = True
                self._set(t, t.phase, t.reason, current=report.get("current"))
                return
            await asyncio.sleep(1.0)
        t.reported = True
        self._set(t, "failed", "no verdict from the update watchdog in time")


def _log_end(task: asyncio.Task[None]) -> None:
    """The work task's end: its own errors are caught and reported; anything else is logged here."""
    if not task.cancelled() and task.exception() is not None:
        log.error("update work task ended", exc_info=task.exception())


def _http_url(url: object) -> bool:
    """An http(s) URL a download can ever fetch: a host, a valid port, no spaces or control
    characters (urllib refuses those on every attempt, which the download would retry for ever)."""
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS or not url.startswith(("http://", "https://")):
        return False
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a port that is not a number in 0..65535 raises ValueError)
    except ValueError:
        return False
    return bool(parts.hostname)
