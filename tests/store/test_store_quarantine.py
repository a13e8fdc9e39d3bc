"""Corrupt outboxes moved aside (a failing SD card): only the newest copy is kept, a full disk takes
it before any telemetry, and stats name it. Real files; the disk part on a small real tmpfs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.cli import main
from citynerve.gateway.store import Outbox, read_stats
from citynerve.hil.faults.store import fill, small_disk

T = 1_780_000_000.0


def readings(start: int, n: int) -> list[Reading]:
    return [Reading(f"m-{k % 50}", "kwh", (start + k) * 1.37, "kWh", T + start + k) for k in range(n)]


def alarm(i: int) -> Event:
    return Event("fire-1", "fire", EventState.RAISED, Severity.CRITICAL, T + i, message=f"fire #{i}")


def damage(db: Path) -> bytes:
    """Zero the header page, as a card that lost a block does: "file is not a database"."""
    data = bytearray(db.read_bytes())
    data[0:100] = bytes(100)
    db.write_bytes(bytes(data))
    return bytes(data)


def aside(db: Path) -> list[str]:
    return sorted(p.name for p in db.parent.glob(f"{db.name}.corrupt-*"))


def test_repeated_corruption_keeps_only_the_newest_copy(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    # Two copies left by a release that kept them all, one with its -wal and -shm.
    for name in ("gw.db.corrupt-20260101T000000Z", "gw.db.corrupt-20260102T000000Z"):
        (tmp_path / name).write_bytes(b"old" * 1000)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"gw.db.corrupt-20260102T000000Z{suffix}").write_bytes(b"old")
    for cycle in range(4):
        with Outbox(db) as ob:
            ob.append(readings(cycle * 1000, 1000), [alarm(cycle)])
        data = damage(db)
        with Outbox(db) as ob:
            assert ob.quarantined is not None
            kept = Path(ob.quarantined)
        assert aside(db) == [kept.name], cycle  # the older copies went, with their -wal / -shm
        assert kept.read_bytes() == data  # the newest kept as it was, for forensics


def test_stats_show_the_kept_copy_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    with Outbox(db) as ob:
        ob.append(readings(0, 1000), [])
    damage(db)
    with Outbox(db) as ob:
        kept = ob.quarantined
        assert kept is not None
    with Outbox(db) as ob:  # the next start: no quarantine this run, the copy still on the disk
        stats = ob.stats()
        assert stats.quarantined is None and stats.state == "ok"
        copy = stats.to_dict()["corrupt_copy"]
        assert copy["path"] == kept and copy["bytes"] == os.path.getsize(kept)
        assert copy["mtime"] == os.path.getmtime(kept)
    assert read_stats(db).to_dict()["corrupt_copy"] == copy  # `store stats`, `diag store`


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_deletes_the_kept_copy_before_evicting_telemetry(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "8m") as disk:
        db = disk / "gw.db"
        with Outbox(db) as ob:
            for k in range(40):
                ob.append(readings(k * 1000, 1000), [])
        damage(db)
        with Outbox(db) as ob:
            kept = Path(f"{ob.quarantined}")
            assert kept.stat().st_size > 300_000
            filler = fill(disk)
            os.truncate(filler, os.path.getsize(filler) - 128 * 1024)  # some room, less than the copy
            k = 0
            while kept.exists() and k < 200:
                ob.append(readings(k * 1000, 1000), [alarm(k)])
                k += 1
            assert not kept.exists() and aside(db) == []
            for j in range(k, k + 20):  # the room it gave is the outbox's: nothing evicted
                ob.append(readings(j * 1000, 1000), [])
            stats = ob.stats()
            assert not ob.disk_full and stats.dropped_by == {} and stats.to_dict()["corrupt_copy"] is None


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_an_outbox_opened_on_a_full_disk_deletes_the_kept_copy_first(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "6m") as disk:
        db = disk / "gw.db"
        with Outbox(db) as ob:
            ob.append(readings(0, 2000), [])
        (disk / "gw.db.corrupt-20260101T000000Z").write_bytes(b"\xff" * 1_000_000)
        fill(disk)
        with Outbox(db) as ob:
            assert not ob.disk_full and aside(db) == []
            ob.append(readings(2000, 100), [alarm(1)])
            assert ob.stats().dropped_by == {}


def test_store_stats_and_diag_store_name_the_kept_copy(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    with Outbox(db) as ob:
        ob.append(readings(0, 1000), [])
    damage(db)
    with Outbox(db) as ob:
        kept = f"{ob.quarantined}"
    (tmp_path / "gw.toml").write_text('[store]\npath = "gw.db"\n')
    for args in (["store", "stats", "--db", str(db)], ["diag", "store", "-c", str(tmp_path / "gw.toml")]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert f"corrupt outbox kept aside: {kept} (" in result.output.replace("\n", ""), args
