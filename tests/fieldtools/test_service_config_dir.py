"""The service may write what remote config writes: the config, its history and the platform's
profiles, all in /etc/citynerve. The unit leaves that folder writable under ProtectSystem=strict and
`service install` makes it root:citynerve 2770; a real unprivileged user (`daemon` standing in for
`citynerve`) then applies a change, root rolls it back, and the service applies again."""

from __future__ import annotations

import configparser
import grp
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from citynerve.gateway.cli import main
from citynerve.gateway.remoteconfig import ConfigHistory
from citynerve.gateway.service import StepKind, plan_install, render_unit
from citynerve.gateway.service.install import CONFIG_DIR_MODE
from citynerve.gateway.service.unit import CONFIG_FILE

from .test_config_owner import CONFIG, RUN_AS_DAEMON, readable_by_service

USER = "daemon"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _service_section(text: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser["Service"]


def test_the_unit_lets_the_service_write_what_remote_config_writes() -> None:
    s = _service_section(render_unit("/opt/citynerve/bin/citynerve"))
    assert s["ProtectSystem"] == "strict"
    writable = [Path(p) for p in s["ReadWritePaths"].split()]
    hist = ConfigHistory(Path(CONFIG_FILE))
    for path in (Path(CONFIG_FILE), hist.dir / "index.json", hist.profile_dir / "x.toml"):
        # a rename needs the folder that holds the file to be writable
        assert any(path.parent.is_relative_to(w) for w in writable), (path, writable)
    assert int(s["ConfigurationDirectoryMode"], 8) == CONFIG_DIR_MODE == 0o2770


def test_the_real_install_makes_the_config_folder_the_service_groups() -> None:
    plan = plan_install(prefix=Path("/"), exec_start="/opt/citynerve/bin/citynerve", enable=False)
    folder = next(s for s in plan.steps if s.kind is StepKind.FOLDER and s.path == "/etc/citynerve")
    assert (folder.mode, folder.owner) == (0o2770, "root:citynerve")
    assert "remote config" in folder.what


@pytest.fixture
def prefix() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="cnsvc-", dir="/tmp"))
    os.chmod(top, 0o755)  # the service user must reach the folders below
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


APPLY = textwrap.dedent(
    """\
    import sys
    from pathlib import Path
    from citynerve.gateway.remoteconfig import ConfigHistory
    from citynerve.gateway.remoteconfig.history import state_digest
    from citynerve.gateway.shipped import profiles as profiles_dir

    path, version, device = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    hist = ConfigHistory(path)
    running = hist.read_config()
    hist.snapshot(running, hist.current()["version"])
    new = running.replace('id = "wm-2"', f'id = "{device}"')
    shipped = (profiles_dir() / "modbus-water-meter.toml").read_text(encoding="utf-8")
    profiles = {"site-water-meter": shipped.replace('id = "modbus-water-meter"', 'id = "site-water-meter"')}
    hist.write_state(new, profiles)
    hist.set_current(version, state_digest(new, profiles))
    """
)


def apply_as_service(config: Path, version: str, device: str) -> subprocess.CompletedProcess[str]:
    """What the gateway does for `config_apply`, run as the unprivileged service user."""
    return subprocess.run(
        [
            *RUN_AS_DAEMON,
            *(sys.executable, "-c", APPLY, str(config), version, device),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HOME": "/"},
    )


@needs_root
def test_the_service_user_applies_remote_config_root_rolls_back_and_it_applies_again(prefix: Path) -> None:
    source = prefix / "gw.toml"
    source.write_text(CONFIG, encoding="utf-8")
    r = cli(
        *("service", "install", "--prefix", str(prefix), "--no-enable"),
        *("--exec", "/opt/citynerve/current/bin/citynerve", "--config", str(source)),
    )
    assert r.exit_code == 0, r.output
    etc = prefix / "etc" / "citynerve"
    config = etc / "gateway.toml"
    assert stat.S_IMODE(etc.stat().st_mode) == 0o2770
    # What `service install` does on the real system, where it may chown (not under a prefix).
    gid = grp.getgrnam(USER).gr_gid
    os.chown(etc, 0, gid)
    os.chmod(etc, 0o2770)
    os.chown(config, 0, gid)
    assert readable_by_service(config)

    proc = apply_as_service(config, "v2", "wm-7")
    assert proc.returncode == 0, proc.stderr
    assert 'id = "wm-7"' in config.read_text(encoding="utf-8")
    hist = ConfigHistory(config)
    assert hist.current()["version"] == "v2" and set(hist.read_profiles()) == {"site-water-meter"}

    # The installer rolls back with sudo; the service can still read and write everything.
    r = cli("config", "rollback", "-c", str(config), "--no-reload")
    assert r.exit_code == 0, r.output
    assert 'id = "wm-2"' in config.read_text(encoding="utf-8")
    for f in [config, hist.dir / "index.json", *hist.dir.glob("*.toml")]:
        assert readable_by_service(f), f
    proc = apply_as_service(config, "v3", "wm-8")
    assert proc.returncode == 0, proc.stderr
    assert 'id = "wm-8"' in config.read_text(encoding="utf-8")
