"""`citynerve service install` into a temp prefix (never the real system): the hardened unit passes
`systemd-analyze verify`, enabling works with `systemctl --root`, upgrades keep config and outbox."""

from __future__ import annotations

import configparser
import hashlib
import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from citynerve.gateway.cli import main
from citynerve.gateway.service import render_unit

UNIT = "etc/systemd/system/citynerve.service"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_the_unit_is_hardened() -> None:
    unit = _unit(render_unit("/opt/citynerve/bin/citynerve"))
    s = unit["Service"]
    assert s["User"] == "citynerve" and s["Group"] == "citynerve"
    assert s["SupplementaryGroups"].split() == ["dialout", "bluetooth"]
    assert s["ExecStart"] == "/opt/citynerve/bin/citynerve run --config /etc/citynerve/gateway.toml"
    reload = "/opt/citynerve/bin/citynerve config reload --config /etc/citynerve/gateway.toml"
    assert s["ExecReload"] == reload
    assert s["ProtectSystem"] == "strict" and s["ReadWritePaths"] == "/var/lib/citynerve /etc/citynerve"
    assert s["NoNewPrivileges"] == "yes" and s["PrivateTmp"] == "yes"
    assert s["Restart"] == "on-failure"
    assert s["StandardOutput"] == "journal"
    assert s["CapabilityBoundingSet"] == ""
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    r = cli("service", "install", "--prefix", str(tmp_path), "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    kinds = [s["kind"] for s in out["steps"]]
    assert kinds[0] == "skip"  # no user under a prefix
    assert "unit" in kinds and "enable" in kinds
    assert list(tmp_path.iterdir()) == []


def test_install_into_a_prefix_then_upgrade(tmp_path: Path, short_dir: Path) -> None:
    config = short_dir / "gw.toml"
    config.write_text('[gateway]\nid = "gw-1"\n')
    r = cli("service", "install", "--prefix", str(tmp_path), "--config", str(config), "--json")
    assert r.exit_code == 0, r.output
    unit = tmp_path / UNIT
    assert unit.is_file()
    installed = (tmp_path / "etc/citynerve/gateway.toml").read_text()
    assert installed.startswith(config.read_text())  # the given config, then the system paths
    assert tomllib.loads(installed)["store"]["path"] == "/var/lib/citynerve/outbox.db"
    assert oct((tmp_path / "var/lib/citynerve").stat().st_mode & 0o777) == "0o750"
    if shutil.which("systemctl"):
        wants = tmp_path / "etc/systemd/system/multi-user.target.wants/citynerve.service"
        assert wants.is_symlink()
    if shutil.which("systemd-analyze"):
        proc = subprocess.run(
            ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, proc.stderr
        assert "Unknown key" not in proc.stderr and "ignoring" not in proc.stderr, proc.stderr

    # The gateway ran for a while: an outbox and an edited config exist.
    outbox = tmp_path / "var/lib/citynerve/outbox.db"
    outbox.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    (tmp_path / "var/lib/citynerve/outbox.db-wal").write_bytes(b"wal" * 100)
    digest = hashlib.sha256(outbox.read_bytes()).hexdigest()
    (tmp_path / "etc/citynerve/gateway.toml").write_text('[gateway]\nid = "gw-edited"\n')
    unit.write_text(unit.read_text().replace("RestartSec=5", "RestartSec=1"))  # an older unit

    r = cli("service", "install", "--prefix", str(tmp_path), "--config", str(config), "--json")
    assert r.exit_code == 0, r.output
    whats = [s["what"] for s in json.loads(r.output)["steps"]]
    assert any(w.startswith("upgrade unit") for w in whats)
    assert any(w.startswith("keep config /etc/citynerve/gateway.toml as it is") for w in whats)
    assert hashlib.sha256(outbox.read_bytes()).hexdigest() == digest
    assert (tmp_path / "var/lib/citynerve/outbox.db-wal").read_bytes() == b"wal" * 100
    assert (tmp_path / "etc/citynerve/gateway.toml").read_text() == '[gateway]\nid = "gw-edited"\n'
    assert "RestartSec=5" in unit.read_text()
    assert [p.name for p in unit.parent.glob("citynerve.service.*.bak")]

    # A third run has nothing to change in the unit.
    r = cli("service", "install", "--prefix", str(tmp_path), "--json")
    assert any(s["what"].endswith("is up to date") for s in json.loads(r.output)["steps"])


def test_unit_command_prints_the_unit() -> None:
    r = cli("service", "unit", "--exec", "/usr/local/bin/citynerve")
    assert r.exit_code == 0
    assert r.output == render_unit("/usr/local/bin/citynerve", groups=_groups())


def _groups() -> tuple[str, ...]:
    # `service unit` renders with the default groups (the installer narrows them to existing ones).
    return ("dialout", "bluetooth")


def test_a_failed_step_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "etc"
    blocker.write_text("a file where a folder must go")
    r = cli("service", "install", "--prefix", str(tmp_path), "--no-enable")
    assert r.exit_code == 1
    assert "service install: create folder /etc/citynerve" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("missing", ["--config"])
def test_missing_config_file_is_bad_input(tmp_path: Path, missing: str) -> None:
    r = cli("service", "install", "--prefix", str(tmp_path), missing, str(tmp_path / "nope.toml"))
    assert r.exit_code == 2


def test_dry_run_for_the_real_system_plans_user_and_systemctl(short_dir: Path) -> None:
    """Only planned (dry run): what `sudo citynerve service install` would run on this machine."""
    from citynerve.gateway.service import plan_install

    plan = plan_install(prefix=Path("/"), exec_start="/opt/citynerve/bin/citynerve")
    commands = [s.command for s in plan.steps if s.command]
    user_cmd = commands[0]
    assert user_cmd[0] in ("useradd", "usermod") and user_cmd[-1] == "citynerve"
    if user_cmd[0] == "useradd":
        assert "--system" in user_cmd and "/usr/sbin/nologin" in user_cmd
    assert ("systemctl", "daemon-reload") in commands
    assert ("systemctl", "enable", "citynerve.service") in commands
    if not Path("/etc/citynerve/gateway.toml").exists():
        # No config yet: enabled, not started (it would only refuse to run).
        assert ("systemctl", "restart", "citynerve.service") not in commands
    config = short_dir / "gw.toml"
    config.write_text('[gateway]\nid = "gw-1"\n')
    plan = plan_install(prefix=Path("/"), config=config, exec_start="/opt/citynerve/bin/citynerve")
    assert ("systemctl", "restart", "citynerve.service") in [s.command for s in plan.steps]


@pytest.mark.parametrize(
    "user", ["citynerve\nExecStartPre=/bin/sh -c id", "Root", "a b", "-x", "x" * 33, "gw;rm", ""]
)
def test_a_user_that_is_not_a_user_name_is_refused(user: str, tmp_path: Path) -> None:
    for args in (["service", "unit"], ["service", "install", "--prefix", str(tmp_path), "--dry-run"]):
        r = CliRunner().invoke(main, [*args, "--exec", "/usr/bin/citynerve", "--user", user])
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
        assert "--user" in r.output and "not a user name" in r.output
        assert "\nExecStartPre" not in r.output  # no unit printed, let alone an injected line


def test_exec_path_with_spaces_is_quoted_as_systemd_reads_it(tmp_path: Path) -> None:
    root = tmp_path / "my gw 100%"
    command = root / "current" / "bin" / "citynerve"
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)
    text = render_unit(str(command), user="svc_gw-1")
    assert f'ExecStart="{str(command).replace("%", "%%")}" run --config' in text
    assert "User=svc_gw-1\n" in text
    r = CliRunner().invoke(main, ["service", "unit", "--exec", "/usr/bin/citynerve\nExecStartPre=/bin/sh"])
    assert r.exit_code == 2 and "control character" in r.output
    if shutil.which("systemd-analyze"):  # systemd's own parser: the quoted path is one executable
        unit = tmp_path / "citynerve.service"
        unit.write_text(text)
        proc = subprocess.run(
            ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0 and "not executable" not in proc.stderr, proc.stderr
        assert (
            "Invalid" not in proc.stderr and "Ignoring" not in proc.stderr and "ignoring" not in proc.stderr
        ), proc.stderr


def test_upgrades_in_one_second_keep_every_previous_unit(tmp_path: Path) -> None:
    execs = ("/opt/a/citynerve", "/opt/b/citynerve", "/opt/c/citynerve")
    for e in execs:
        r = cli("service", "install", "--prefix", str(tmp_path), "--no-enable", "--exec", e)
        assert r.exit_code == 0, r.output
    units = sorted((tmp_path / UNIT).parent.glob("citynerve.service*"))
    starts = {
        line.removeprefix("ExecStart=").split()[0]
        for u in units
        for line in u.read_text().splitlines()
        if line.startswith("ExecStart=")
    }
    assert len(units) == 3 and starts == set(execs), [u.name for u in units]
    assert not list((tmp_path / UNIT).parent.glob(".*.tmp"))


def test_a_config_with_relative_store_and_control_paths_gets_the_system_folders(
    tmp_path: Path, short_dir: Path
) -> None:
    # Relative paths resolve against the config's folder: copied as written, the outbox went to
    # /etc/citynerve/var/citynerve.db (not /var/lib/citynerve, which upgrades keep), the socket beside it.
    config = short_dir / "gw.toml"
    config.write_text(
        '# site notes\n[gateway]\nid = "gw-1"\n\n[store]\npath = "var/citynerve.db"  # outbox\n'
        'synchronous = "full"\n\n[[buses]]\nid = "b"\n'
    )
    r = cli("service", "install", "--prefix", str(tmp_path), "--config", str(config), "--no-enable", "--json")
    assert r.exit_code == 0, r.output
    installed = (tmp_path / "etc/citynerve/gateway.toml").read_text()
    data = tomllib.loads(installed)
    assert data["store"] == {"path": "/var/lib/citynerve/outbox.db", "synchronous": "full"}
    assert data["control"] == {"socket": "/run/citynerve/control.sock"}
    assert data["buses"] == [{"id": "b"}] and installed.startswith("# site notes\n")
    (step,) = [s["what"] for s in json.loads(r.output)["steps"] if s["kind"] == "config"]
    assert "store.path = /var/lib/citynerve/outbox.db (was 'var/citynerve.db'" in step
    assert "control.socket = /run/citynerve/control.sock (was unset)" in step
    assert config.read_text().count("var/citynerve.db") == 1  # the given file is not changed


def test_absolute_paths_are_kept_and_ones_it_cannot_place_are_refused(
    tmp_path: Path, short_dir: Path
) -> None:
    config = short_dir / "gw.toml"
    text = '[gateway]\nid = "gw-1"\n[store]\npath = "/srv/outbox.db"\n[control]\nsocket = "/run/x.sock"\n'
    config.write_text(text)
    r = cli("service", "install", "--prefix", str(tmp_path / "a"), "--config", str(config), "--no-enable")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a/etc/citynerve/gateway.toml").read_text() == text
    config.write_text('store = { path = "var/x.db" }\n[gateway]\nid = "gw-1"\n')  # inline: not placed
    r = cli("service", "install", "--prefix", str(tmp_path / "b"), "--config", str(config), "--no-enable")
    assert r.exit_code == 1 and "set store.path to an absolute path" in r.output, r.output
    assert not (tmp_path / "b/etc/citynerve/gateway.toml").exists()


def test_a_secret_file_that_stays_behind_is_named_by_the_install(tmp_path: Path, short_dir: Path) -> None:
    # `init` beside a password file writes `password_file = "broker.pw"`, relative to the config's
    # folder. Installed to /etc/citynerve, it was looked for there: the install said nothing, the
    # service started and could not log in to the broker, and only the journal said why.
    config = short_dir / "gw.toml"
    secret = short_dir / "broker.pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    config.write_text(
        '[gateway]\nid = "gw-1"\norg = { city = "310100", district = "310106", street = "310106013" }\n'
        '[upstream]\nbrokers = ["mqtts://platform.example:8883"]\nusername = "gw-1"\n'
        'password_file = "broker.pw"\n'
    )
    assert cli("config", "check", str(config)).exit_code == 0  # where it was written, it is fine
    r = cli("service", "install", "--prefix", str(tmp_path), "--config", str(config), "--no-enable", "--json")
    assert r.exit_code == 0, r.output  # the files are written; the installer is told what to fix
    warnings = [s["what"] for s in json.loads(r.output)["steps"] if s["kind"] == "warning"]
    missing = tmp_path / "etc/citynerve/broker.pw"
    assert any(
        w.startswith("the installed config /etc/citynerve/gateway.toml: upstream.password_file: ")
        and f"secret file {missing} does not exist" in w
        for w in warnings
    ), warnings
    assert (tmp_path / "etc/citynerve/gateway.toml").exists()
    # Copied beside the installed config (the gateway user's alone), a second install of another
    # prefix's config has nothing to say.
    shutil.copy(secret, missing)
    missing.chmod(0o600)
    (tmp_path / "etc/citynerve/gateway.toml").unlink()
    r = cli("service", "install", "--prefix", str(tmp_path), "--config", str(config), "--no-enable")
    assert r.exit_code == 0 and "warning" not in r.output, r.output


def test_every_dry_run_step_says_what_it_would_do(tmp_path: Path) -> None:
    # It printed "would folder /etc/citynerve" and "would config ... from ...": a verb missing.
    config = tmp_path / "gw.toml"
    config.write_text(
        '[gateway]\nid = "gw-1"\norg = { city = "310100", district = "310106", street = "310106013" }\n'
    )
    prefix = tmp_path / "root"
    r = cli("service", "install", "--prefix", str(prefix), "--config", str(config), "--dry-run")
    assert r.exit_code == 0, r.output
    # Rich wraps at 80 columns, a long tmp path (xdist's) mid-word: compared without whitespace.
    text = squash(r.output)
    assert squash("would create folder /etc/citynerve (config; the service writes remote config") in text
    assert squash(f"would install config /etc/citynerve/gateway.toml from {config}") in text
    r = cli("service", "install", "--prefix", str(prefix), "--config", str(config), "--dry-run", "--json")
    would = [s["what"] for s in json.loads(r.output)["steps"] if s["kind"] not in ("skip", "warning")]
    assert {w.split()[0] for w in would} == {"create", "install", "write", "enable"}, would
    assert not prefix.exists()  # a dry run
    (prefix / "etc/citynerve").mkdir(parents=True)
    (prefix / "etc/citynerve/gateway.toml").write_text(config.read_text())
    r = cli("service", "install", "--prefix", str(prefix), "--config", str(config), "--dry-run")
    text = squash(r.output)
    assert squash("would set up folder /etc/citynerve") in text
    assert squash("would create folder /var/lib/citynerve") in text
    keep = f"would keep config /etc/citynerve/gateway.toml as it is (not replaced by {config})"
    assert squash(keep) in text


def squash(text: str) -> str:
    return "".join(text.split())
