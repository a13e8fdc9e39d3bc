"""`citynerve diag bundle`: one .tar.gz a technician can send to support.

What goes in (each part is optional: a part that cannot be had is listed in `manifest.json` with
the reason, and the bundle is still written, because the broken gateway is the one that needs it):
- `config/gateway.toml`: the config, secrets redacted (see redact.py), with the result of validating
  it. A config that is not valid TOML is left out (only the parse error is kept): redaction needs
  the parsed keys, and guessing at broken text could leak a secret.
- `logs/journal.txt` (journald, `journalctl -u citynerve`) or `logs/<file>` from a log file, with
  URL passwords redacted in every line (a refused `mqtt://user:pw@host` is quoted by config check).
- `store/stats.json`: outbox figures and a quick integrity check (read-only: safe while it runs).
- `status.json`: the running gateway's status (bus error counters, devices, uplink), if it runs.
  With a config invalid elsewhere, the socket (and the outbox) come from their own sections, as
  `citynerve status` finds them.
- `versions.json`: Python, OS, the citynerve package and its dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

import tomli_w

from citynerve.gateway.api import ConfigError, GatewayError
from citynerve.gateway.commissioning.redact import redact_config, redact_value
from citynerve.gateway.config import GatewayConfig, load_config, sections
from citynerve.gateway.config.tomlfile import read_toml
from citynerve.gateway.control import ask
from citynerve.gateway.logs import redact_urls

JOURNAL_UNIT = "citynerve"
LOG_TAIL_BYTES = 4_000_000
"""How much of a --log-file goes in: its recent end; only that much is ever read."""
PACKAGES = (
    "citynerve",
    "pymodbus",
    "pyserial",
    "pyserial-asyncio-fast",
    "bleak",
    "bumble",
    "aiomqtt",
    "pydantic",
    "click",
    "rich",
    "cryptography",
    "tomli-w",
    "amqtt",
)


@dataclass(slots=True)
class BundleReport:
    """What went into a bundle and what could not."""

    path: Path
    members: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # part -> why it is not there

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "members": self.members, "missing": self.missing}


def versions() -> dict[str, Any]:
    """Python, OS and package versions (a package that is not installed shows as null)."""
    pkgs: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": pkgs,
    }


def journal(unit: str = JOURNAL_UNIT, lines: int = 2000) -> bytes | None:
    """The unit's recent journal as journald gives it (bytes: a line need not be UTF-8, e.g. a
    panel's GB18030 text), or None when journald has nothing for it (not a systemd host)."""
    exe = shutil.which("journalctl")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "-u", unit, "-n", str(lines), "--no-pager", "-o", "short-iso"],
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    out: bytes = proc.stdout
    if proc.returncode != 0 or not out.strip() or out.strip() == b"-- No entries --":
        return None
    return out


def quick_check(path: str) -> str:
    """SQLite `PRAGMA quick_check` on a read-only connection: "ok" or the first problems found."""
    import sqlite3
    from urllib.parse import quote

    conn = sqlite3.connect(f"file:{quote(str(Path(path).absolute()))}?mode=ro", uri=True, timeout=5.0)
    try:
        rows = conn.execute("PRAGMA quick_check(20)").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows)


def store_health(path: str) -> dict[str, Any]:
    """Outbox stats plus a quick integrity check. Raises StoreError when it cannot be read."""
    from citynerve.gateway.store import read_stats

    stats = read_stats(path).to_dict()
    now = time.time()
    for lane in stats["lanes"]:
        lane["oldest_age_s"] = None if lane["oldest_ts"] is None else round(now - lane["oldest_ts"], 1)
    try:
        check = quick_check(path)
    except Exception as err:  # sqlite3.Error and friends: report, do not crash the check
        check = f"cannot check: {err}"
    stats["integrity"] = check
    stats["healthy"] = check == "ok"
    return stats


def tail(path: Path, limit: int) -> bytes:
    """The last `limit` bytes of a file, read from there: a 3 GB log is never read whole. Only a
    regular file (a FIFO would block the bundle, a device never ends). Raises OSError."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            f.seek(size - limit)
        return f.read(limit)


def redacted_log(data: bytes, *, cut: bool = False) -> bytes:
    """Journal or log text as it may leave the gateway: URL passwords redacted, every other byte as
    it was (bytes that are not UTF-8 pass through). `cut`: the text starts mid-file, so its first
    line, perhaps a URL cut after its `scheme://`, is dropped."""
    if cut:
        data = data.partition(b"\n")[2]
    return redact_urls(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def _add(tar: tarfile.TarFile, name: str, data: bytes, report: BundleReport) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))
    report.members.append(name)


def _json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=2, default=str).encode()


def _config_part(config_path: Path, report: BundleReport) -> tuple[bytes | None, GatewayConfig | None]:
    try:
        # Bounded like every config read (size; nesting that would escape as RecursionError).
        data = read_toml(config_path)
    except ConfigError as err:
        why = "; ".join(i.message for i in err.issues)
        if "not valid TOML" in why:
            # The parser's error names line and column only, never the text around it.
            why += ": left out, because a config that does not parse cannot be redacted safely"
        report.missing["config"] = f"{config_path}: {why}"
        return None, None
    redacted = tomli_w.dumps(redact_config(data)).encode()
    try:
        cfg: GatewayConfig | None = load_config(config_path)
        check: dict[str, Any] = {"valid": True}
    except ConfigError as err:
        cfg = None
        check = {"valid": False, "issues": [redact_value(str(i)) for i in err.issues]}
    return redacted + b"\n# config check: " + json.dumps(check).encode() + b"\n", cfg


def _paths(
    config_path: Path, cfg: GatewayConfig | None, report: BundleReport
) -> tuple[Path | None, Path | None]:
    """The outbox and the control socket. With an invalid config, each from its own section, as
    `citynerve status` finds the socket: a mistake elsewhere (a device's poll interval) must not
    leave the running gateway's status and the outbox out of the bundle meant to diagnose it."""
    if cfg is not None:
        return Path(cfg.store.path), Path(cfg.control.socket)
    found: list[Path | None] = []
    for name, what, read in (
        ("store", "store path", sections.store_path),
        ("status", "control socket", sections.control_socket),
    ):
        try:
            found.append(read(config_path))
        except ConfigError as err:
            why = "; ".join(redact_value(str(i)) for i in err.issues)
            report.missing.setdefault(name, f"unknown {what} (config not valid: {why})")
            found.append(None)
    return found[0], found[1]


def build_bundle(
    config_path: Path,
    out: Path,
    *,
    log_file: Path | None = None,
    journal_lines: int = 2000,
    journal_unit: str = JOURNAL_UNIT,
) -> BundleReport:
    """Write the support bundle to `out` (.tar.gz). Blocking: call it in a thread from async code."""
    report = BundleReport(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open_new(out) as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        config_bytes, cfg = _config_part(config_path, report)
        if config_bytes is not None:
            _add(tar, "config/gateway.toml", config_bytes, report)
        if cfg is None and "config" not in report.missing:
            report.missing["config_check"] = "the config is not valid (see config/gateway.toml)"
        _add(tar, "versions.json", _json(versions()), report)
        logs = journal(journal_unit, journal_lines)
        if logs is not None:
            _add(tar, "logs/journal.txt", redacted_log(logs), report)
        elif log_file is not None:
            try:
                data = tail(log_file, LOG_TAIL_BYTES)
                cut = len(data) == LOG_TAIL_BYTES and log_file.stat().st_size > LOG_TAIL_BYTES
                _add(tar, f"logs/{log_file.name}", redacted_log(data, cut=cut), report)
            except OSError as err:
                report.missing["logs"] = f"cannot read {log_file}: {err}"
        else:
            report.missing["logs"] = f"no journal for unit {journal_unit} and no --log-file given"
        store, socket = _paths(config_path, cfg, report)
        if store is not None:
            try:
                _add(tar, "store/stats.json", _json(store_health(str(store))), report)
            except GatewayError as err:
                report.missing["store"] = str(err)
        if socket is not None:
            try:
                status = asyncio.run(ask(socket, "status", timeout_s=10.0))
                _add(tar, "status.json", _json(status), report)
            except (GatewayError, OSError) as err:
                report.missing["status"] = str(err)
        manifest["members"] = list(report.members)
        manifest["missing"] = dict(report.missing)
        _add(tar, "manifest.json", _json(manifest), report)
    return report


class BundleExistsError(FileExistsError):
    """The output path exists already (a file, or a link someone planted): never reused."""


@contextlib.contextmanager
def open_new(path: Path) -> Iterator[BinaryIO]:
    """Create `path` for writing, mode 0600 (it holds device addresses and logs). Refuses an existing
    file and a symlink (O_EXCL | O_NOFOLLOW): in a shared folder another user could have prepared
    either to read the bundle or to make us overwrite a file of theirs. Removed again on failure."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        kind = "a symlink" if path.is_symlink() else "a file"
        raise BundleExistsError(
            errno.EEXIST, f"{kind} of that name exists already: not reused", str(path)
        ) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
    except BaseException:
        path.unlink(missing_ok=True)
        raise
