"""How an update starts, stops and watches the gateway's service: a small interface with two kinds.

- `SystemdService`: the installed service (`citynerve service install`): `systemctl restart`,
  `systemctl is-active`, and the update watchdog as a transient unit (`systemd-run`), so it lives
  outside the gateway's unit and outside the process that started the update.
- `ProcessService`: `<root>/current/bin/citynerve run -c CONFIG` as a detached process with a pid
  file, and the watchdog as another detached process. For boxes without systemd, and for tests: it
  runs exactly the command the unit runs, from the same `current` link.

Both are described by a small JSON-able dict (`describe` / `service_from`) so that the watchdog,
a separate process started later, drives the same service as the `update apply` that started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, BinaryIO

from citynerve.gateway.api import PermanentError

LOG_MAX_BYTES = 1024 * 1024  # update/service.log and watch.log: rotated at open past this


def open_log(path: Path) -> BinaryIO:
    """`path` opened to append a detached process's output, renamed to `<name>.1` first (replacing
    the older one) when over LOG_MAX_BYTES: nothing else rotates it, and every start appends."""
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_MAX_BYTES:
            os.replace(path, path.with_name(f"{path.name}.1"))
    return path.open("ab")


class ServiceError(PermanentError):
    """The service manager refused a step; `step` names it."""

    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"service: {step}: {reason}")


class ServiceManager(ABC):
    """What an update needs from whatever runs the gateway."""

    @abstractmethod
    def start(self) -> None:
        """Start the gateway from `<root>/current` (its command goes through the link)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the gateway and wait until it is gone. No error if it is not running."""

    def restart(self) -> None:
        """Stop the running gateway (if any) and start it from `<root>/current`."""
        self.stop()
        self.start()

    @abstractmethod
    def is_running(self) -> bool:
        """True while the service's process is up (not crashed, not between restarts)."""

    @abstractmethod
    def spawn_watchdog(self, argv: list[str], log: Path) -> None:
        """Start `argv` detached from the caller and from the service, so it outlives both."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-able description that `service_from` turns back into this manager."""


class SystemdService(ServiceManager):
    """The gateway as the systemd unit `citynerve.service`."""

    def __init__(self, unit: str = "citynerve.service") -> None:
        self.unit = unit

    def _systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        # reset-failed: a unit that hit its start limit during a crash-looping release starts again.
        self._systemctl("reset-failed", self.unit)
        proc = self._systemctl("start", "--no-block", self.unit)
        if proc.returncode != 0:
            raise ServiceError("start", proc.stderr.strip() or f"systemctl exit {proc.returncode}")

    def stop(self) -> None:
        proc = self._systemctl("stop", self.unit)
        if proc.returncode != 0:
            raise ServiceError("stop", proc.stderr.strip() or f"systemctl exit {proc.returncode}")

    def is_running(self) -> bool:
        return self._systemctl("is-active", "--quiet", self.unit).returncode == 0

    def spawn_watchdog(self, argv: list[str], log: Path) -> None:
        unit = f"citynerve-update-watch-{int(time.time())}"
        cmd = ["systemd-run", "--unit", unit, "--collect", "--quiet", "--property=KillMode=process", *argv]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise ServiceError("start the update watchdog", proc.stderr.strip())

    def describe(self) -> dict[str, Any]:
        return {"kind": "systemd", "unit": self.unit}


class ProcessService(ServiceManager):
    """The gateway as a detached `citynerve run` process started from `<root>/current`."""

    def __init__(self, root: Path, config: Path, *, stop_timeout_s: float = 30.0) -> None:
        self.root = root
        self.config = config
        self.stop_timeout_s = stop_timeout_s
        self.pidfile = root / "update" / "service.pid"
        self.log = root / "update" / "service.log"

    def _pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def start(self) -> None:
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        with open_log(self.log) as out:
            proc = subprocess.Popen(
                [str(self.root / "current" / "bin" / "citynerve"), "run", "-c", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            )  # fmt: skip
        tmp = self.pidfile.with_suffix(".tmp")
        tmp.write_text(f"{proc.pid}\n")
        os.replace(tmp, self.pidfile)

    def stop(self) -> None:
        pid = self._pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)

    def is_running(self) -> bool:
        return self._pid() is not None

    def spawn_watchdog(self, argv: list[str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open_log(log) as out:
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)

    def describe(self) -> dict[str, Any]:
        return {"kind": "process", "config": str(self.config)}


def _alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (a crashed child whose parent has not reaped it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def service_from(description: dict[str, Any], root: Path) -> ServiceManager:
    """The manager a `describe()` dict names."""
    if description.get("kind") == "process":
        return ProcessService(root, Path(str(description["config"])))
    return SystemdService(str(description.get("unit", "citynerve.service")))
