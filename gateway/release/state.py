"""The state of an update (update/state.json, written atomically) and whether something drives it:
the watchdog holds update/watch.lock for as long as it runs (gateway/release/update.py)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from citynerve.gateway.api import PermanentError
from citynerve.gateway.release.bundle import fsync_dir, release_info

IN_PROGRESS = ("switching", "confirming", "rolling-back")
# A watchdog just spawned (a detached process, a systemd-run unit) may take this long on a loaded box
# before it holds its lock; it counts as running meanwhile (monotonic time, this boot only).
SPAWN_GRACE_S = 60.0
TERMINAL = ("confirmed", "rolled-back", "failed")
HISTORY = 20


class UpdateError(PermanentError):
    """An update that cannot start or go on; `reason` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"update: {reason}")


def state_path(root: Path) -> Path:
    return root / "update" / "state.json"


def read_state(root: Path) -> dict[str, Any]:
    try:
        data = json.loads(state_path(root).read_text())
    except (OSError, ValueError):
        return {"phase": "idle", "history": []}
    return data if isinstance(data, dict) else {"phase": "idle", "history": []}


def write_state(root: Path, state: dict[str, Any]) -> None:
    """Temp file + fsync + rename + fsync of the folder: after a power cut, the old or the new state."""
    path = state_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump(state, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def set_phase(root: Path, state: dict[str, Any], phase: str, **fields: Any) -> None:
    state.update(fields, phase=phase, updated=time.time())
    if phase in TERMINAL:
        keys = ("request_id", "from", "to", "phase", "reason", "started", "updated")
        entry = {k: state.get(k) for k in keys}
        state["history"] = [*state.get("history", []), entry][-HISTORY:]
    write_state(root, state)


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def watching(root: Path, *, wait: bool) -> Iterator[bool]:
    """update/watch.lock, held by whoever drives an update (its watchdog, or the boot hook finishing
    an interrupted one) for as long as it does: released by the kernel when that process dies.
    Yields False, without the lock, when another holds it and `wait` is False."""
    (root / "update").mkdir(parents=True, exist_ok=True)
    with (root / "update" / "watch.lock").open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def _watch_lock_held(root: Path) -> bool:
    try:
        f = (root / "update" / "watch.lock").open("rb")
    except OSError:
        return False
    with f:
        try:  # shared and let go at once: a watchdog taking it meanwhile waits a moment, no more
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def started_elsewhere(state: dict[str, Any]) -> bool:
    """A watchdog of this boot spawned moments ago that has not taken its lock yet, or one of a
    release before the lock that runs by its pid."""
    if state.get("boot_id") != boot_id():
        return False
    pid = state.get("watchdog_pid")
    if pid is None:
        spawned = state.get("spawned")
        return isinstance(spawned, (int, float)) and 0 <= time.monotonic() - spawned < SPAWN_GRACE_S
    return not state.get("watch_lock") and _pid_alive(pid)


def watchdog_alive(root: Path, state: dict[str, Any]) -> bool:
    """Something drives the update in `state`: its watchdog runs or is starting."""
    return _watch_lock_held(root) or started_elsewhere(state)


def release_version(link: Path) -> str | None:
    """The version a link (current, known-good) points at, or None."""
    info = release_info(link)
    return str(info["version"]) if info else None
