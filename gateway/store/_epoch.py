"""Store epochs, the marker file beside the outbox, quarantine, and the notices the outbox writes.

An epoch names one life of the outbox file. A new one starts whenever the file is created,
recreated (missing or empty where one existed before), restored from an older copy, or replaced
after it was found corrupt; every message the uplink sends carries it, so `(gateway_id, epoch, seq)`
is never reused even when a file's seqs are.

The marker `<outbox>.epoch` (JSON: epoch, next seq and the seqs reserved, written atomically at
open, at close, at most once a minute after commits, and before a commit uses seqs beyond the
reserved ones) is what lets the gateway tell "a new gateway" from "the outbox that was here is
gone": it outlives the file it describes. Its reserved bound keeps seqs from being given twice
when a crash costs the file its last commits (a -wal lost or damaged, or not written by a card
that ignores fsync): the next open goes on from the bound.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from citynerve.gateway.api import Event, EventState, Severity

log = logging.getLogger(__name__)

MARKER_SUFFIX = ".epoch"
EPOCH_KEY = "outbox.epoch"  # in the outbox's `state` table
# State that describes positions in one epoch's seqs (the uplink's acknowledged positions): it is
# cleared when an existing file gets a new epoch (restored or replaced), so the first message of
# the new epoch links to nothing (prev_seq 0) rather than to the old epoch's seqs.
EPOCH_STATE_PREFIXES = ("uplink.ack_seq.", "outbox.absent.")
MAX_MARKER_BYTES = 4096
RESERVE_SUFFIX = ".reserve"
CORRUPT_INFIX = ".corrupt-"  # + UTC time: a corrupt outbox moved aside (quarantine)
RESERVE_BYTES = 2 * 1024 * 1024  # room for a checkpoint and an eviction once the disk is full
SEQ_RESERVE = 100_000  # seqs the marker reserves at a time: one marker write per so many rows

# Event kinds the outbox itself writes into the event lane (device_id "": the gateway itself).
KIND_NEW_EPOCH = "outbox_new_epoch"
KIND_DROPPED = "outbox_dropped"


@dataclass(frozen=True, slots=True)
class Marker:
    """What the marker file says: the last epoch, a lower bound of its next seq, and an upper bound
    (`reserved`: no row got a seq at or above it; equal to next_seq after a clean close)."""

    epoch: str
    next_seq: int
    reserved: int


def new_epoch() -> str:
    """A fresh epoch: 16 hex digits (64 random bits; a string, so that JavaScript keeps it exact)."""
    return secrets.token_hex(8)


def marker_path(path: str) -> str:
    return path + MARKER_SUFFIX


def read_marker(path: str) -> Marker | None:
    """The marker beside outbox `path`, or None when there is none (or it cannot be read)."""
    try:
        with open(marker_path(path), "rb") as f:
            raw = f.read(MAX_MARKER_BYTES + 1)
        obj = json.loads(raw)
        epoch, next_seq = obj["epoch"], obj["next_seq"]
        reserved = obj.get("reserved", next_seq)  # markers before it: next_seq
        if not isinstance(epoch, str) or any(type(n) is not int for n in (next_seq, reserved)):
            raise ValueError("epoch must be a string, next_seq and reserved integers")
        return Marker(epoch[:64], max(1, next_seq), max(1, next_seq, reserved))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("outbox %s: marker file unreadable, ignored: %r", path, err)
        return None


def write_marker(path: str, marker: Marker) -> None:
    """Write the marker atomically (temporary file, fsync, rename, fsync of the folder). Raises OSError."""
    target = marker_path(path)
    tmp = f"{target}.tmp"
    data = json.dumps(
        {"epoch": marker.epoch, "next_seq": marker.next_seq, "reserved": marker.reserved}
    ).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    except OSError:
        os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    os.replace(tmp, target)
    dir_fd = os.open(os.path.dirname(os.path.abspath(target)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def reserve_path(path: str) -> str:
    return path + RESERVE_SUFFIX


def make_reserve(path: str) -> bool:
    """Make sure the reserve file beside the outbox exists at full size; False when there is no
    room for it (then nothing of it is left behind). It is what a full disk gives back so that
    SQLite can checkpoint and evict old telemetry (see Outbox._disk_full)."""
    target = reserve_path(path)
    try:
        if os.path.getsize(target) >= RESERVE_BYTES:
            return True
    except OSError:
        pass
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        finally:
            os.close(fd)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(target)
        return False


def corrupt_copies(path: str) -> list[str]:
    """The corrupt outboxes moved aside beside `path` (not their -wal / -shm), oldest first."""
    found = glob.glob(glob.escape(path + CORRUPT_INFIX) + "*")
    return sorted(p for p in found if not p.endswith(("-wal", "-shm")))


def remove_corrupt_copies(path: str) -> int:
    """Delete every corrupt outbox moved aside beside `path`, with its -wal / -shm; the bytes freed."""
    freed = 0
    for name in glob.glob(glob.escape(path + CORRUPT_INFIX) + "*"):
        with contextlib.suppress(OSError):
            size = os.path.getsize(name)
            os.unlink(name)
            freed += size
    return freed


def quarantine(path: str) -> str:
    """Move a corrupt outbox (and its -wal / -shm) aside for forensics; returns its new name.

    Only the newest copy is kept: a failing card corrupts the outbox again and again, and every
    copy is as large as the outbox was (max_bytes is the live file's bound, not theirs)."""
    remove_corrupt_copies(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = f"{path}{CORRUPT_INFIX}{stamp}"
    n = 1
    while os.path.exists(aside):  # one that could not be deleted: never mix its -wal with ours
        n += 1
        aside = f"{path}{CORRUPT_INFIX}{stamp}-{n}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)
    return aside


def notice(kind: str, severity: Severity, message: str, attrs: dict[str, Any]) -> Event:
    """An event the outbox writes about itself (a new epoch, a dropped seq range)."""
    return Event("", kind, EventState.RAISED, severity, time.time(), "", None, message, attrs)
