"""Power-cut recovery and the platform's report, on a release layout made by hand (fast)."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.release import outbox_copy, update
from citynerve.gateway.release import state as state_module
from citynerve.gateway.release.bundle import RELEASE_INFO, switch_link
from citynerve.gateway.release.service import ServiceManager
from citynerve.gateway.release.state import SPAWN_GRACE_S


def layout(root: Path, versions: tuple[str, ...] = ("1.0.0", "1.0.1")) -> None:
    for v in versions:
        (root / "releases" / v).mkdir(parents=True)
        (root / "releases" / v / RELEASE_INFO).write_text(json.dumps({"version": v}))


def interrupted(root: Path, phase: str, **extra: Any) -> None:
    layout(root)
    switch_link(root / "current", "releases/1.0.1" if phase != "switching" else "releases/1.0.0")
    switch_link(root / "known-good", "releases/1.0.0")
    state = {"phase": phase, "from": "1.0.0", "to": "1.0.1", "deadline_s": 5, "settle_s": 1,
             "socket": str(root / "none.sock"), "baseline": {}, "service": {"kind": "process", "config": "x"},
             "boot_id": "another boot", "watchdog_pid": 2**22 + 7, "history": [], **extra}  # fmt: skip
    update.write_state(root, state)


@pytest.mark.parametrize("phase", ["switching", "confirming", "rolling-back"])
def test_boot_hook_rolls_back_an_update_a_power_cut_interrupted(tmp_path: Path, phase: str) -> None:
    interrupted(tmp_path, phase)
    state = update.resume(tmp_path)
    assert state["phase"] == "rolled-back" and "interrupted" in state["reason"]
    assert os.readlink(tmp_path / "current") == "releases/1.0.0"
    assert os.readlink(tmp_path / "known-good") == "releases/1.0.0"
    assert update.read_state(tmp_path)["history"][-1]["phase"] == "rolled-back"
    assert update.resume(tmp_path)["phase"] == "rolled-back"  # idempotent: a second boot changes nothing


def test_boot_hook_leaves_an_update_whose_watchdog_runs(tmp_path: Path) -> None:
    interrupted(tmp_path, "confirming", boot_id=update.boot_id(), watchdog_pid=os.getpid())
    assert update.resume(tmp_path)["phase"] == "confirming"
    assert os.readlink(tmp_path / "current") == "releases/1.0.1"


def test_state_is_replaced_whole(tmp_path: Path) -> None:
    update.write_state(tmp_path, {"phase": "confirmed"})
    assert update.read_state(tmp_path)["phase"] == "confirmed"
    assert not list((tmp_path / "update").glob("*.tmp"))
    (tmp_path / "update" / "state.json").write_text("{not json")
    assert update.read_state(tmp_path)["phase"] == "idle"


class RefusingService(ServiceManager):
    """Never used to start anything: the platform test must not get that far."""

    def start(self) -> None:
        raise AssertionError("started")

    def stop(self) -> None:
        raise AssertionError("stopped")

    def is_running(self) -> bool:
        return False

    def spawn_watchdog(self, argv: list[str], log: Path) -> None:
        raise AssertionError("watchdog")

    def describe(self) -> dict[str, Any]:
        return {"kind": "process", "config": "x"}


def test_platform_apply_reports_a_refused_bundle_without_touching_anything(tmp_path: Path) -> None:
    layout(tmp_path)
    switch_link(tmp_path / "current", "releases/1.0.0")
    bad = tmp_path / "bundle.tar.gz"
    bad.write_bytes(b"not a tarball")
    config = tmp_path / "gw.toml"  # a config that loads: it is checked before the bundle
    org = 'org = { city = "310100", district = "310106", street = "310106013" }'
    config.write_text(f'[gateway]\nid = "gw-1"\n{org}\n')
    report = update.platform_apply(bad, root=tmp_path, config=config, service=RefusingService(),
                                   request_id="cmd-42")  # fmt: skip
    assert report["request_id"] == "cmd-42" and report["phase"] == "failed"
    assert "not a readable .tar.gz" in report["reason"]
    assert os.readlink(tmp_path / "current") == "releases/1.0.0"


def test_platform_report_is_small_and_names_the_request(tmp_path: Path) -> None:
    interrupted(tmp_path, "confirming", request_id="cmd-7", reason="x" * 5000)
    report = update.platform_report(tmp_path)
    assert report["request_id"] == "cmd-7" and report["phase"] == "interrupted"
    assert report["current"] == "1.0.1" and report["known_good"] == "1.0.0"
    assert len(json.dumps(report)) < 1000


def test_a_new_update_first_rolls_back_one_whose_watchdog_died(tmp_path: Path) -> None:
    interrupted(tmp_path, "switching")  # the watchdog switched `current` and died before the restart:
    switch_link(tmp_path / "current", "releases/1.0.1")  # the old release still runs, nothing to stop
    bad = tmp_path / "bundle.tar.gz"
    bad.write_bytes(b"not a tarball")
    report = update.platform_apply(bad, root=tmp_path, config=tmp_path / "gw.toml", service=RefusingService(),
                                   request_id="cmd-43")  # fmt: skip
    assert report["phase"] == "failed"
    assert os.readlink(tmp_path / "current") == "releases/1.0.0"
    assert [h["phase"] for h in update.read_state(tmp_path)["history"]] == ["rolled-back"]


def test_a_new_update_is_refused_while_a_watchdog_runs(tmp_path: Path) -> None:
    interrupted(tmp_path, "confirming", boot_id=update.boot_id(), watchdog_pid=os.getpid())
    with pytest.raises(update.UpdateError, match="in progress"):
        update.rollback(root=tmp_path, config=tmp_path / "gw.toml", service=RefusingService())


def outbox_of(path: Path, schema: int) -> Path:
    """A small SQLite outbox at `schema` (its user_version)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS rows (x INTEGER)")
    conn.execute(f"PRAGMA user_version = {schema}")
    conn.commit()
    conn.close()
    return path


def migrating(root: Path, phase: str, *, backup: bool, **extra: Any) -> tuple[Path, Path]:
    """An update 1.0.0 (outbox schema 4) -> 1.0.1 (schema 5) that migrated the outbox: its copy
    (schema 4) beside it or gone."""
    outbox = outbox_of(root.parent / "site" / "gw.db", 5)
    copy = root / "update" / "outbox-before-1.0.1.db"
    interrupted(root, phase, outbox=str(outbox), outbox_backup=str(copy), from_schema=4, **extra)
    if backup:
        outbox_of(copy, 4)
    return outbox, copy


def test_a_rollback_never_leaves_the_old_release_on_an_outbox_it_cannot_read(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    outbox, _ = migrating(root, "confirming", backup=False)  # power cut after the copy was deleted
    state = update.resume(root)
    # 1.0.0 would exit at every start ("schema version 5 is newer than this gateway supports"):
    # the box stays on 1.0.1 and says why.
    assert state["phase"] == "failed", state
    assert "not rolled back" in state["reason"] and "schema 5, newer than 1.0.0 reads (4)" in state["reason"]
    assert os.readlink(root / "current") == "releases/1.0.1"
    assert outbox_copy.schema_version(outbox) == 5
    assert update.resume(root)["phase"] == "failed"  # a second boot changes nothing


class PowerCut(BaseException):
    """Raised at one step to end the watchdog there, as a power cut would."""


class FakeService(ServiceManager):
    """A service that runs and is healthy as far as the update can tell; records what was asked."""

    def __init__(self, root: Path | None = None, *, running: bool = True) -> None:
        self.root = root
        self.running = running
        self.calls: list[str] = []
        self.links_at_stop: list[str] = []

    def start(self) -> None:
        self.calls.append("start")
        self.running = True

    def stop(self) -> None:
        self.calls.append("stop")
        if self.root is not None:
            self.links_at_stop.append(os.readlink(self.root / "current"))
        self.running = False

    def is_running(self) -> bool:
        return self.running

    def spawn_watchdog(self, argv: list[str], log: Path) -> None:
        self.calls.append(f"spawn {' '.join(argv[1:])}")

    def describe(self) -> dict[str, Any]:
        return {"kind": "process", "config": "x"}


def test_a_power_cut_as_an_update_is_confirmed_never_loses_the_outbox_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "opt"
    _, copy = migrating(root, "switching", backup=True)
    monkeypatch.setattr(update, "service_from", lambda description, root: FakeService())
    monkeypatch.setattr(update, "wait_healthy", lambda *args, **kwargs: [])  # healthy
    unlink = Path.unlink

    def cut_at_the_copy(self: Path, missing_ok: bool = False) -> None:
        if self == copy:
            raise PowerCut
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", cut_at_the_copy)
    with pytest.raises(PowerCut):
        update.watch(root)
    monkeypatch.setattr(Path, "unlink", unlink)
    # The copy is deleted only once the update is confirmed: the boot hook keeps the new release.
    assert update.read_state(root)["phase"] == "confirmed"
    assert update.resume(root)["phase"] == "confirmed"
    assert os.readlink(root / "current") == os.readlink(root / "known-good") == "releases/1.0.1"


def fake_release(root: Path, version: str, schema: int) -> None:
    """A release folder whose Python answers the outbox schema it knows (all `_switch` asks it)."""
    folder = root / "releases" / version
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    (folder / RELEASE_INFO).write_text(json.dumps({"version": version}))
    (folder / "bin" / "python").write_text(f"#!/bin/sh\necho {schema}\n")
    (folder / "bin" / "python").chmod(0o755)


def site_config(site: Path, outbox: Path, *, min_free: int) -> Path:
    org = 'org = { city = "310100", district = "310106", street = "310106013" }'
    site.mkdir(parents=True, exist_ok=True)
    config = site / "gw.toml"
    config.write_text(
        f'[gateway]\nid = "gw-1"\n{org}\n[store]\npath = "{outbox}"\n[update]\nmin_free_bytes = {min_free}\n'
    )
    return config


def test_no_room_for_the_outbox_copy_refuses_the_update_before_the_switch(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    fake_release(root, "1.0.0", 4)
    fake_release(root, "1.0.1", 5)  # migrates the outbox: a copy is needed
    switch_link(root / "current", "releases/1.0.0")
    outbox = outbox_of(tmp_path / "site" / "gw.db", 4)
    # The real free-space query; min_free_bytes beyond any disk stands for a disk without room.
    config = site_config(tmp_path / "site", outbox, min_free=1 << 60)
    service = FakeService()
    (root / "update").mkdir()  # as the update command's lock makes it
    with pytest.raises(update.UpdateError, match="no room for the outbox copy") as err:
        update._switch(root, "1.0.1", config=config, cfg=update._running_config(config), service=service,
                       deadline_s=5, settle_s=1, wait=False, why="apply")  # fmt: skip
    assert "nothing was switched" in err.value.reason
    assert service.calls == [] and update.read_state(root)["phase"] == "idle"
    assert sorted(p.name for p in (root / "update").iterdir()) == []
    assert os.readlink(root / "current") == "releases/1.0.0"


def test_an_outbox_copy_that_fails_midway_is_removed_and_refuses_the_update(tmp_path: Path) -> None:
    outbox = tmp_path / "gw.db"
    conn = sqlite3.connect(outbox)
    conn.execute("CREATE TABLE b (x BLOB)")
    conn.execute("INSERT INTO b VALUES (randomblob(1048576))")
    conn.commit()
    conn.close()
    dest = tmp_path / "update" / "outbox-before-1.0.1.db"
    dest.parent.mkdir()
    # The disk fills during the copy: the copying process may write 64 KiB per file (RLIMIT_FSIZE,
    # a real write error from the kernel, in a child so that nothing else in this run is limited).
    code = (
        "import resource, signal, sys\nfrom pathlib import Path\n"
        "from citynerve.gateway.release import outbox_copy, update\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
        "try:\n    outbox_copy.copy_outbox(Path(sys.argv[1]), Path(sys.argv[2]), keep_free=0)\n"
        "except update.UpdateError as err:\n    print(err.reason)\n"
    )
    cmd = [sys.executable, "-c", code, str(outbox), str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith(f"cannot copy the outbox to {dest}"), proc
    assert list(dest.parent.iterdir()) == []  # neither the copy nor its .tmp


def test_update_apply_refuses_a_bundle_the_disk_has_no_room_to_install(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    layout(root)
    switch_link(root / "current", "releases/1.0.0")
    config = site_config(tmp_path / "site", tmp_path / "site" / "gw.db", min_free=1 << 60)
    bundle = tmp_path / "citynerve-1.0.2-x86_64.tar.gz"
    bundle.write_bytes(b"checked for room before it is even opened")
    with pytest.raises(update.UpdateError, match=r"no room to install citynerve-1\.0\.2") as err:
        update.apply(bundle, root=root, config=config, service=FakeService(), wait=False)
    assert "nothing was installed" in err.value.reason
    # 1.0.1, neither current, known-good nor the one to roll back to, was removed to make room first
    assert sorted(p.name for p in (root / "releases").iterdir()) == ["1.0.0"]
    assert not (root / "update" / "incoming").exists()


def test_a_rolled_back_update_leaves_no_outbox_copy_behind(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    outbox, copy = migrating(root, "confirming", backup=True)
    state = update.resume(root)
    assert state["phase"] == "rolled-back" and state["outbox_restored"] is True, state
    assert outbox_copy.schema_version(outbox) == 4
    assert not copy.exists()  # as large as the outbox: it used to stay for good
    # One a power cut left (after `rolled-back`, before the delete) goes at the next update.
    outbox_of(copy, 4)
    for version, schema in (("1.0.0", 4), ("1.0.1", 5), ("1.0.2", 5)):
        fake_release(root, version, schema)
    config = site_config(tmp_path / "site", outbox, min_free=0)
    update._switch(root, "1.0.2", config=config, cfg=update._running_config(config), service=FakeService(),
                   deadline_s=5, settle_s=1, wait=False, why="apply")  # fmt: skip
    assert sorted(p.name for p in (root / "update").glob("outbox-before-*")) == ["outbox-before-1.0.2.db"]


def test_an_update_whose_watchdog_is_starting_is_not_taken_for_interrupted(tmp_path: Path) -> None:
    # As `apply --no-wait` or platform_apply leave it: switching, the watchdog spawned, not yet
    # started (a loaded box, systemd-run's latency).
    interrupted(tmp_path, "switching", boot_id=update.boot_id(), watchdog_pid=None, spawned=time.monotonic())
    with pytest.raises(update.UpdateError, match="in progress"):
        update.rollback(root=tmp_path, config=tmp_path / "gw.toml", service=RefusingService())
    assert update.resume(tmp_path)["phase"] == "switching"
    assert update.status(tmp_path)["in_progress"] is True
    assert os.readlink(tmp_path / "current") == "releases/1.0.0"
    # Past the grace period, a watchdog that never started is one that died.
    state = update.read_state(tmp_path)
    update.write_state(tmp_path, {**state, "spawned": time.monotonic() - SPAWN_GRACE_S - 1})
    assert update.resume(tmp_path)["phase"] == "rolled-back"


def test_a_watchdog_is_alive_while_it_holds_its_lock(tmp_path: Path) -> None:
    interrupted(tmp_path, "confirming")  # its pid and boot say nothing: only the lock does
    with (tmp_path / "update" / "watch.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as the watchdog holds it
        assert update.watchdog_alive(tmp_path, update.read_state(tmp_path))
        assert update.resume(tmp_path)["phase"] == "confirming"
        with pytest.raises(update.UpdateError, match="in progress"):
            update.rollback(root=tmp_path, config=tmp_path / "gw.toml", service=RefusingService())
    assert update.resume(tmp_path)["phase"] == "rolled-back"  # let go (the kernel does so at its death)


def test_a_second_watchdog_waits_and_finds_the_update_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupted(tmp_path, "switching", boot_id=update.boot_id(), watchdog_pid=None)
    service = FakeService()
    checking = threading.Event()
    go_on = threading.Event()

    def healthy(*args: Any, **kwargs: Any) -> list[str]:
        checking.set()
        go_on.wait(10)
        return []

    monkeypatch.setattr(update, "service_from", lambda description, root: service)
    monkeypatch.setattr(update, "wait_healthy", healthy)
    first = threading.Thread(target=update.watch, args=(tmp_path,))
    first.start()
    assert checking.wait(10)
    second: list[dict[str, Any]] = []
    later = threading.Thread(target=lambda: second.append(update.watch(tmp_path)))
    later.start()
    later.join(0.5)
    assert later.is_alive()  # waits for the lock
    go_on.set()
    first.join(10)
    later.join(10)
    assert second[0]["phase"] == "confirmed"
    assert service.calls == ["stop", "start"]  # one restart: the second watchdog did nothing


def test_an_update_whose_watchdog_died_is_rolled_back_with_the_service_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "opt"
    outbox, _ = migrating(root, "confirming", backup=True)  # 1.0.1 runs, unconfirmed; watchdog killed
    service = FakeService(root)
    monkeypatch.setattr(update, "service_from", lambda description, root: service)
    monkeypatch.setattr(update, "wait_healthy", lambda *args, **kwargs: [])
    state = update.rollback(root=root, config=tmp_path / "gw.toml", service=FakeService())
    assert state["phase"] == "rolled-back" and state["outbox_restored"] is True, state
    # Stopped before `current` went back and the copy was put back: never under a running gateway.
    assert service.calls == ["stop", "start"] and service.links_at_stop == ["releases/1.0.1"]
    assert os.readlink(root / "current") == "releases/1.0.0" and outbox_copy.schema_version(outbox) == 4


def test_the_gateway_hands_an_interrupted_update_to_a_new_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupted(tmp_path, "confirming")  # 1.0.1 runs, unconfirmed; its watchdog was killed
    service = FakeService(tmp_path)
    monkeypatch.setattr(update, "service_from", lambda description, root: service)
    bad = tmp_path / "bundle.tar.gz"
    bad.write_bytes(b"not a tarball")
    # platform_apply runs in the gateway's own process: stopping the service would stop it halfway.
    report = update.platform_apply(bad, root=tmp_path, config=tmp_path / "gw.toml", service=service,
                                   request_id="cmd-44")  # fmt: skip
    assert report["phase"] == "failed" and "interrupted" in report["reason"], report
    assert "a new watchdog finishes it (confirming)" in report["reason"]
    assert service.calls == [f"spawn update watch --root {tmp_path}"] and service.links_at_stop == []
    assert os.readlink(tmp_path / "current") == "releases/1.0.1"
    state = update.read_state(tmp_path)
    assert state["watchdog_spawns"] == 1 and update.watchdog_alive(tmp_path, state)  # starting
    # The new watchdog (the old release's) finishes a rollback a killed one left halfway, too.
    interrupted(tmp_path / "b", "rolling-back")
    monkeypatch.setattr(update, "wait_healthy", lambda *args, **kwargs: [])
    service.root = tmp_path / "b"
    assert update.watch(tmp_path / "b")["phase"] == "rolled-back"
    assert service.calls[1:] == ["stop", "start"]


def test_a_rollback_says_so_when_the_outbox_copy_is_older_than_the_deadline(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    outbox, copy = migrating(root, "confirming", backup=True)
    now = time.time()  # the watchdog died; 1.0.1 wrote the outbox for an hour after the copy
    os.utime(outbox, (now, now))
    os.utime(copy, (now - 3600, now - 3600))
    state = update.resume(root)  # a reboot
    assert state["phase"] == "rolled-back" and state["outbox_restored"] is True
    said = "the outbox copy put back is 3600 s older than the outbox's last write, past the 5 s deadline: "
    assert f"{said}what 1.0.1 stored since is lost" in state["reason"], state["reason"]


def test_an_update_command_finishes_an_update_whose_watchdog_never_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "opt"
    fake_release(root, "1.0.0", 4)
    fake_release(root, "1.0.1", 4)
    switch_link(root / "current", "releases/1.0.0")
    config = site_config(tmp_path / "site", tmp_path / "site" / "gw.db", min_free=0)
    (root / "update").mkdir()
    monkeypatch.setattr(state_module, "SPAWN_GRACE_S", 0.0)  # a spawn that never starts: dead at once
    cfg = update._running_config(config)
    state = update._switch(root, "1.0.1", config=config, cfg=cfg, service=FakeService(), deadline_s=60,
                           settle_s=1, wait=True, why="apply")  # fmt: skip
    assert state["phase"] == "rolled-back" and "interrupted" in state["reason"]  # not after 2 x 60 + 120 s


def test_a_power_cut_after_known_good_is_switched_confirms_the_update(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found healthy, `known-good` switched, cut before "confirmed": the boot hook finishes the
    confirmation. A rollback would leave `known-good` on the new release and `current` on the old,
    and put the outbox copy back over what the new release stored since it started."""
    root = tmp_path / "opt"
    outbox, copy = migrating(root, "switching", backup=True)
    monkeypatch.setattr(update, "service_from", lambda description, root: FakeService())
    monkeypatch.setattr(update, "wait_healthy", lambda *args, **kwargs: [])  # healthy
    set_phase = update.set_phase

    def cut_at_confirmed(root_: Path, state: dict[str, Any], phase: str, **kw: Any) -> None:
        if phase == "confirmed":
            raise PowerCut
        set_phase(root_, state, phase, **kw)

    monkeypatch.setattr(update, "set_phase", cut_at_confirmed)
    with pytest.raises(PowerCut):
        update.watch(root)
    monkeypatch.setattr(update, "set_phase", set_phase)
    assert update.read_state(root)["phase"] == "confirming"
    assert os.readlink(root / "known-good") == "releases/1.0.1"
    stored_since = outbox.read_bytes()
    state = update.resume(root)  # the reboot
    assert state["phase"] == "confirmed" and "interrupted" in state["reason"], state
    assert os.readlink(root / "current") == os.readlink(root / "known-good") == "releases/1.0.1"
    assert outbox.read_bytes() == stored_since and not copy.exists()  # not the copy put back
    assert update.resume(root)["phase"] == "confirmed"  # a second boot changes nothing


def test_a_rollback_puts_the_copy_back_over_an_outbox_that_is_not_a_database_any_more(tmp_path: Path) -> None:
    """A migrating update rolled back (a reboot before it was confirmed) whose outbox header was
    damaged meanwhile: reading its schema raised, the rollback stopped halfway at every boot and the
    pre-update copy was never put back. The damaged file is moved aside, the copy put back."""
    root = tmp_path / "opt"
    outbox, copy = migrating(root, "confirming", backup=True)
    outbox.write_bytes(b"\0" * 4096)  # the header gone (a torn write, a failing card)
    state = update.resume(root)
    assert state["phase"] == "rolled-back" and state["outbox_restored"] is True, state
    assert "moved aside as" in state["reason"] and "the copy put back" in state["reason"], state
    assert os.readlink(root / "current") == "releases/1.0.0"
    assert outbox_copy.schema_version(outbox) == 4  # the copy, readable by 1.0.0
    (aside,) = outbox.parent.glob("gw.db.corrupt-*")
    assert aside.read_bytes() == b"\0" * 4096 and not copy.exists()
    assert update.resume(root)["phase"] == "rolled-back"  # a second boot changes nothing
