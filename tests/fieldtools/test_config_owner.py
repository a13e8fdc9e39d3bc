"""Config edits made as root keep the config readable by the service user: the replaced file's owner
and group stay, a new one takes its folder's group, and `service install` gives an existing config
the service's group. Real files, a real other user and group (`daemon` stands in for `citynerve`):
these tests need root."""

from __future__ import annotations

import grp
import importlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from citynerve.gateway.cli import main
from citynerve.gateway.remoteconfig import ConfigHistory
from citynerve.gateway.service import StepKind, install, plan_install
from citynerve.gateway.service.install import InstallPlan

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
# The gateway's own code run as the unprivileged user: it may read and enter every folder (the
# checkout may sit where only root may enter, as a `mktemp -d` clone does) but writes only where
# the permissions let it, which is what these tests are about.
RUN_AS_DAEMON = (
    *("setpriv", "--reuid=daemon", "--regid=daemon", "--clear-groups"),
    *("--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"),
)

USER = "daemon"

CONFIG = textwrap.dedent(
    """\
    # Site: Daning Road 7 -- installer notes here
    [gateway]
    id = "gw-test-0001"
    org = { city = "310100", district = "310106", street = "310106013" }

    [control]
    socket = "var/gw.sock"

    [[buses]]
    id = "rs485-1"
    protocol = "modbus_tcp"
    host = "127.0.0.1"
    port = 1502

    # water meter flat 201
    [[devices]]
    id = "wm-2"
    bus = "rs485-1"
    profile = "modbus-water-meter"
    address = 2
    location = { address_code = "310106013007" }
    """
)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def uid_gid() -> tuple[int, int]:
    return pwd.getpwnam(USER).pw_uid, grp.getgrnam(USER).gr_gid


def readable_by_service(path: Path) -> bool:
    """Can the service user (its own user and group only) read `path`?"""
    proc = subprocess.run(
        ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", "cat", str(path)],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


@pytest.fixture
def etc() -> Iterator[Path]:
    """`/etc/citynerve` as an older `service install` made it: root:<service group> 0750, without
    the setgid bit (a new file gets the group from the writer, not from the filesystem)."""
    top = Path(tempfile.mkdtemp(prefix="cnown-", dir="/tmp"))
    os.chmod(top, 0o755)
    d = top / "citynerve"
    d.mkdir()
    os.chown(d, 0, uid_gid()[1])
    os.chmod(d, 0o750)
    try:
        yield d
    finally:
        shutil.rmtree(top, ignore_errors=True)


def service_config(etc: Path, uid: int = 0) -> Path:
    path = etc / "gateway.toml"
    path.write_text(CONFIG, encoding="utf-8")
    os.chown(path, uid, uid_gid()[1])
    os.chmod(path, 0o640)
    assert readable_by_service(path)
    return path


def owner(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_devices_add_and_remove_keep_owner_group_and_mode(etc: Path) -> None:
    path = service_config(etc)
    r = cli(
        *("devices", "add", "-c", str(path), "--id", "wm-4", "--bus", "rs485-1"),
        *("--profile", "modbus-water-meter", "--address", "4", "--no-reload"),
    )
    assert r.exit_code == 0, r.output
    assert owner(path) == (0, uid_gid()[1], 0o640)
    assert readable_by_service(path)
    assert "wm-4" in path.read_text(encoding="utf-8")
    r = cli("devices", "remove", "-c", str(path), "wm-2", "--no-reload")
    assert r.exit_code == 0, r.output
    assert owner(path) == (0, uid_gid()[1], 0o640)
    assert readable_by_service(path)
    assert len(list(etc.glob("gateway.toml.*.bak"))) == 2  # a backup of each edit, none overwritten


def test_devices_import_keeps_owner_group_and_mode(etc: Path) -> None:
    path = service_config(etc)
    register = etc.parent / "register.csv"
    register.write_text("meter number,building,floor,room\n2,7,2,201\n", encoding="utf-8")
    r = cli("devices", "import", "-c", str(path), str(register))
    assert r.exit_code == 0, r.output
    assert 'room = "201"' in path.read_text(encoding="utf-8")
    assert owner(path) == (0, uid_gid()[1], 0o640)
    assert readable_by_service(path)


def test_config_rollback_by_root_keeps_the_service_users_files(etc: Path) -> None:
    # The service (remote config) wrote the config and its history: they are its own.
    uid, gid = uid_gid()
    os.chmod(etc, 0o2770)
    path = service_config(etc, uid)
    hist = ConfigHistory(path)
    hist.snapshot(CONFIG.replace("wm-2", "wm-9"), "v7")
    for f in [hist.dir, *hist.dir.iterdir()]:
        os.chown(f, uid, gid)
    r = cli("config", "rollback", "v7", "-c", str(path), "--no-reload")
    assert r.exit_code == 0, r.output
    assert "wm-9" in path.read_text(encoding="utf-8")
    assert owner(path) == (uid, gid, 0o640)
    for f in hist.dir.iterdir():  # the snapshot root just took and the index it rewrote
        assert (f.stat().st_uid, f.stat().st_gid) == (uid, gid), f


def test_init_into_the_service_folder_takes_its_group(etc: Path) -> None:
    path = etc / "gateway.toml"
    r = cli(
        *("init", "-c", str(path), "--gateway-id", "gw-1", "--city", "310100", "--district", "310106"),
        *("--street", "310106013", "--bus", "rs485-1:modbus_tcp:127.0.0.1:1502", "--no-interactive"),
    )
    assert r.exit_code == 0, r.output
    assert owner(path) == (0, uid_gid()[1], 0o640)
    assert readable_by_service(path)


def test_service_install_gives_an_existing_config_the_service_group(
    etc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The guide's flow: `sudo citynerve init` into a folder that did not yet have the service's
    # group wrote root:root 0600; `sudo citynerve service install` keeps the file and its content
    # but must let the service read it.
    path = etc / "gateway.toml"
    path.write_text(CONFIG, encoding="utf-8")
    os.chmod(path, 0o600)
    install_mod = importlib.import_module("citynerve.gateway.service.install")
    monkeypatch.setattr(install_mod, "CONFIG_FILE", str(path))  # the real /etc is not ours to change
    plan = plan_install(prefix=Path("/"), config=path, exec_start="/opt/citynerve/bin/citynerve", user=USER)
    access = [s for s in plan.steps if s.kind is StepKind.CONFIG_ACCESS]
    assert len(access) == 1 and not any(s.kind is StepKind.CONFIG for s in plan.steps)
    assert f"group {USER}, readable by the group" in access[0].what
    # Only this step: the others create users and call systemctl on the real system.
    install(InstallPlan(Path("/"), access))
    assert owner(path) == (0, uid_gid()[1], 0o640)
    assert path.read_text(encoding="utf-8") == CONFIG
    assert readable_by_service(path)


def test_service_install_into_a_prefix_makes_an_existing_config_group_readable(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "citynerve" / "gateway.toml"
    config.parent.mkdir(parents=True)
    config.write_text(CONFIG, encoding="utf-8")
    os.chmod(config, 0o600)
    r = cli(
        *("service", "install", "--prefix", str(tmp_path), "--no-enable"),
        *("--exec", "/opt/citynerve/current/bin/citynerve", "--config", str(config)),
    )
    assert r.exit_code == 0, r.output
    assert "readable by its group" in r.output
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert config.read_text(encoding="utf-8") == CONFIG
