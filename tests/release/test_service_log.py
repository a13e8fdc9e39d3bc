"""`--service process` logs (update/service.log, update/watch.log): every start appended to them and
nothing rotated them. Now rotated at open past LOG_MAX_BYTES: real ProcessService starts of a
release whose `citynerve` is a script that writes a known amount and exits."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from citynerve.gateway.release.service import LOG_MAX_BYTES, ProcessService

PER_START = 300 * 1024  # bytes the release's `citynerve` writes at each start


def release(root: Path) -> ProcessService:
    bin_dir = root / "releases" / "v1" / "bin"
    bin_dir.mkdir(parents=True)
    script = bin_dir / "citynerve"
    # stdout and stderr both: the gateway's log lines go to stderr.
    script.write_text(
        f"#!{sys.executable}\nimport os, sys\n"
        f"os.write(1, b'o' * {PER_START // 2}); os.write(2, b'e' * {PER_START // 2})\n"
    )
    script.chmod(0o755)
    os.symlink("releases/v1", root / "current")
    return ProcessService(root, root / "gw.toml")


def start_and_wait(svc: ProcessService) -> None:
    svc.start()
    deadline = time.monotonic() + 30
    while svc.is_running():  # the script exits once it has written (reaped by is_running)
        assert time.monotonic() < deadline, "the release's citynerve did not exit"
        time.sleep(0.02)


def test_a_log_over_the_bound_is_rotated_at_start(tmp_path: Path) -> None:
    svc = release(tmp_path)
    svc.log.parent.mkdir(parents=True)
    old = b"x" * (3 * LOG_MAX_BYTES)  # left by years of starts
    svc.log.write_bytes(old)
    Path(f"{svc.log}.1").write_bytes(b"older")
    start_and_wait(svc)
    assert Path(f"{svc.log}.1").read_bytes() == old  # the older one replaced
    assert svc.log.stat().st_size == PER_START  # this start's output alone


def test_the_bound_holds_across_many_starts(tmp_path: Path) -> None:
    svc = release(tmp_path)
    for _ in range(12):  # 3.6 MB written in all
        start_and_wait(svc)
        for log in (svc.log, Path(f"{svc.log}.1")):
            assert not log.exists() or log.stat().st_size <= LOG_MAX_BYTES + PER_START
    assert sorted(p.name for p in svc.log.parent.glob("service.log*")) == ["service.log", "service.log.1"]


def test_the_watchdog_log_is_rotated_too(tmp_path: Path) -> None:
    svc = release(tmp_path)
    watch = tmp_path / "update" / "watch.log"
    watch.parent.mkdir(parents=True)
    watch.write_bytes(b"w" * (LOG_MAX_BYTES + 1))
    done = tmp_path / "done"
    svc.spawn_watchdog([sys.executable, "-c", f"print('watching'); open({str(done)!r}, 'w').close()"], watch)
    deadline = time.monotonic() + 30
    while not done.exists():
        assert time.monotonic() < deadline, "the watchdog did not run"
        time.sleep(0.02)
    assert Path(f"{watch}.1").stat().st_size == LOG_MAX_BYTES + 1
    assert watch.read_text() == "watching\n"
