"""A write the folder refuses is one line naming the file and why, exit 1, and nothing changes:
`report` into a folder the user may not write, `devices add|remove|import` and `init` by a member
of the service group (may read /etc/citynerve, not write it). The real CLI as a real unprivileged
user (`daemon`), so these tests need root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_config_owner import CONFIG, RUN_AS_DAEMON, etc, uid_gid

__all__ = ["etc"]  # the fixture: root:daemon 0750 folder, reachable

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
CITYNERVE = str(Path(sys.executable).with_name("citynerve"))


def as_service_group(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RUN_AS_DAEMON, CITYNERVE, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**os.environ, "HOME": "/", "COLUMNS": "300"},
        timeout=120,
    )


def readable_config(etc: Path) -> Path:
    path = etc / "gateway.toml"
    path.write_text(CONFIG, encoding="utf-8")
    os.chown(path, 0, uid_gid()[1])
    os.chmod(path, 0o640)
    return path


def refused(proc: subprocess.CompletedProcess[str], path: Path) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"{path}: cannot write: Permission denied" in out, out
    assert "Traceback" not in out, out


@pytest.mark.parametrize(
    "args",
    [
        (
            *("devices", "add", "--id", "wm-4", "--bus", "rs485-1"),
            *("--profile", "modbus-water-meter", "--address", "4", "--no-reload"),
        ),
        ("devices", "remove", "wm-2", "--no-reload"),
    ],
    ids=["add", "remove"],
)
def test_devices_edit_in_a_folder_the_user_may_not_write(etc: Path, args: tuple[str, ...]) -> None:
    path = readable_config(etc)
    proc = as_service_group(*args[:2], "-c", str(path), *args[2:])
    refused(proc, path)
    assert path.read_text(encoding="utf-8") == CONFIG
    assert sorted(p.name for p in etc.iterdir()) == ["gateway.toml"]


def test_devices_import_in_a_folder_the_user_may_not_write(etc: Path) -> None:
    path = readable_config(etc)
    register = etc.parent / "register.csv"
    register.write_text("meter number,building,floor,room\n2,7,2,201\n", encoding="utf-8")
    os.chmod(register, 0o644)
    refused(as_service_group("devices", "import", "-c", str(path), str(register)), path)
    assert path.read_text(encoding="utf-8") == CONFIG
    # --dry-run is a report: the rows cannot be checked beside the config, and it says so.
    proc = as_service_group("devices", "import", "-c", str(path), str(register), "--dry-run")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert f"rows not checked against the config: {path}: cannot write: Permission denied" in out, out
    assert "would take 1" in out, out


def test_init_into_a_folder_the_user_may_not_write(etc: Path) -> None:
    os.chmod(etc, 0o750 | 0o005)  # others may look, not write
    path = etc / "gateway.toml"
    proc = as_service_group(
        *("init", "-c", str(path), "--gateway-id", "gw-1", "--city", "310100", "--district", "310106"),
        *("--street", "310106013", "--bus", "rs485-1:modbus_tcp:127.0.0.1:1502", "--no-interactive"),
    )
    refused(proc, path)
    assert not path.exists()


def test_report_into_a_folder_the_user_may_not_write(etc: Path) -> None:
    path = readable_config(etc)
    out = etc.parent / "ro"
    out.mkdir()
    os.chmod(out, 0o755)
    proc = as_service_group("report", "-c", str(path), cwd=out)
    refused(proc, out / "commissioning-report.html")
    assert list(out.iterdir()) == []
