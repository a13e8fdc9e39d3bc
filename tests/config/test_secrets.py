"""Secret files that group or others may read are refused (or, when allowed, a warning); settings
that weaken security are warnings in `config check` and in the log of `citynerve run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynerve.gateway.api import ConfigError
from citynerve.gateway.cli import main
from citynerve.gateway.config import load_config
from tests.config.test_config_errors import EXAMPLES, HEAD

REPO = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, upstream: str, extra: str = "") -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(
        HEAD
        + textwrap.dedent(
            """
            [store]
            path = "var/gw.db"
            [control]
            socket = "var/gw.sock"
            """
        )
        + textwrap.dedent(upstream)
        + extra
    )
    return path


def password_file(tmp_path: Path, mode: int) -> Path:
    pw = tmp_path / "mqtt.pass"
    pw.write_text("s3cret-pass\n")
    pw.chmod(mode)
    return pw


UPSTREAM_TLS = """
[upstream]
brokers = ["mqtts://127.0.0.1:1"]
username = "gw"
password_file = "mqtt.pass"
"""


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_secret_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    password_file(tmp_path, mode)
    path = config(tmp_path, UPSTREAM_TLS)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    [issue] = info.value.issues
    assert issue.path == "upstream.password_file"
    assert f"(mode {mode:04o})" in issue.message and "chmod 600" in issue.message
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert "upstream.password_file: secret file" in result.output


def test_a_private_secret_file_passes(tmp_path: Path) -> None:
    password_file(tmp_path, 0o600)
    cfg = load_config(config(tmp_path, UPSTREAM_TLS))
    assert cfg.warnings == ()


def test_the_explicit_flag_turns_the_refusal_into_a_warning(tmp_path: Path) -> None:
    password_file(tmp_path, 0o644)
    path = config(tmp_path, UPSTREAM_TLS)
    result = CliRunner().invoke(main, ["config", "check", "--allow-insecure-secrets", str(path)])
    assert result.exit_code == 0, result.output
    assert "upstream.password_file: warning: secret file" in result.output
    allowed = config(tmp_path, UPSTREAM_TLS, "\n[security]\nallow_insecure_secret_files = true\n")
    cfg = load_config(allowed)
    assert [w.path for w in cfg.warnings] == ["upstream.password_file"]


def test_key_files_of_devices_are_checked_too(tmp_path: Path) -> None:
    key = tmp_path / "mh.key"
    key.write_text("00112233445566778899aabbccddeeff\n")
    key.chmod(0o644)
    path = config(
        tmp_path,
        "",
        textwrap.dedent(
            """
            [[buses]]
            id = "ble"
            protocol = "bthome"
            [[devices]]
            id = "mh-1"
            bus = "ble"
            profile = "bthome-manhole-cover"
            address = "A4:C1:38:00:00:01"
            key_file = "mh.key"
            location = { address_code = "310106013007" }
            """
        ),
    )
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert "devices[0] (id 'mh-1').key_file: secret file" in result.output
    key.chmod(0o600)
    assert CliRunner().invoke(main, ["config", "check", str(path)]).exit_code == 0


def test_tls_verify_off_and_a_password_over_plain_mqtt_are_warnings(tmp_path: Path) -> None:
    password_file(tmp_path, 0o600)
    path = config(
        tmp_path,
        """
        [upstream]
        brokers = ["mqtt://127.0.0.1:1", "mqtts://127.0.0.1:2"]
        username = "gw"
        password_file = "mqtt.pass"
        tls = { verify = false }
        """,
    )
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "upstream.tls.verify: warning: TLS server verification is off" in result.output
    assert "upstream.brokers: warning: the broker password is sent in clear text to mqtt://127.0.0.1:1" in (
        result.output
    )
    as_json = CliRunner().invoke(main, ["config", "check", "--json", str(path)])
    assert '"path": "upstream.tls.verify"' in as_json.output


def test_run_logs_the_warnings_at_start(tmp_path: Path) -> None:
    password_file(tmp_path, 0o600)
    path = config(
        tmp_path,
        """
        [upstream]
        brokers = ["mqtt://127.0.0.1:1"]
        username = "gw"
        password_file = "mqtt.pass"
        tls = { verify = false }
        """,
        '\n[log]\nformat = "json"\n',
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "clear text" in line and any("verification is off" in s for s in seen):
                break
        text = "".join(seen)
        assert "upstream.tls.verify: warning: TLS server verification is off" in text
        assert "the broker password is sent in clear text" in text
        assert "s3cret-pass" not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_config_holding_a_secret_itself_warns_when_others_can_read_it(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        "",
        textwrap.dedent(
            """
            [[buses]]
            id = "ble"
            protocol = "bthome"
            [[devices]]
            id = "mh-1"
            bus = "ble"
            profile = "bthome-manhole-cover"
            address = "A4:C1:38:00:00:01"
            key = "00112233445566778899aabbccddeeff"
            location = { address_code = "310106013007" }
            """
        ),
    )
    path.chmod(0o644)
    # A device and no [rules]: "no alarms will be raised" too (tests/config/test_rules_coverage.py).
    [warning] = [w for w in load_config(path).warnings if w.path != "rules"]
    assert warning.path == "devices[0].key" and warning.subject == "mh-1"
    assert "others can read it (mode 0644)" in warning.message
    assert "00112233445566778899aabbccddeeff" not in str(warning)
    path.chmod(0o640)  # the installer's layout: root:citynerve, read through the group
    assert [w for w in load_config(path).warnings if w.path != "rules"] == []


def test_a_secret_file_that_does_not_exist_is_refused_by_config_check_naming_the_key(tmp_path: Path) -> None:
    """The installer learns on site that the broker password file is missing: `config check` exits 2
    naming the key (it said valid, and `run` then failed every connect as 'no broker reachable');
    `run` starts without it (meters, rules, the outbox go on) with a warning naming the key."""
    path = config(tmp_path, UPSTREAM_TLS)  # mqtt.pass is not there
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 2, result.output
    assert "upstream.password_file: secret file" in result.output
    assert f"{tmp_path / 'mqtt.pass'} does not exist" in result.output
    cfg = load_config(path)
    [warning] = [w for w in cfg.warnings if not w.path.startswith("rules")]
    assert warning.path == "upstream.password_file" and "does not exist" in warning.message
    password_file(tmp_path, 0o600)
    assert CliRunner().invoke(main, ["config", "check", str(path)]).exit_code == 0


def test_init_with_a_password_file_not_there_yet_says_so(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    args = ["init", "-c", str(path), "--gateway-id", "gw-1", "--city", "310100", "--district", "310106"]
    args += ["--street", "310106013", "--bus", "rs485-1:modbus_tcp:127.0.0.1:1502", "--no-interactive"]
    args += ["--upstream", "mqtts://127.0.0.1:8883", "--username", "gw", "--password-file", "mqtt.pass"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "upstream.password_file: warning: secret file" in result.output
    assert "does not exist" in result.output
    assert CliRunner().invoke(main, ["config", "check", str(path)]).exit_code == 2


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_shipped_example_names_its_absent_secret_files(example: Path) -> None:
    """Examples naming /etc/citynerve/... secret files (and CA files): on a machine without them (a
    dev box) `config check` refuses exactly those, each by key; `run`'s loader warns; where they
    exist, valid."""
    absent = {w.path: w.message for w in load_config(example).warnings if "does not exist" in w.message}
    result = CliRunner().invoke(main, ["config", "check", "--json", str(example)])
    report = json.loads(result.output)
    if not absent:
        assert result.exit_code == 0 and report["valid"], report
        return
    assert result.exit_code == 2
    issues = {i["path"]: "warning: " + i["message"] for i in report["issues"]}
    assert {k: v for k, v in issues.items() if not k.startswith("rules")} == absent
    assert all(
        m.startswith(("warning: secret file /etc/citynerve/", "warning: /etc/citynerve/"))
        for m in absent.values()
    ), absent


def test_config_check_warns_of_311_without_e2e_acks(tmp_path: Path) -> None:
    """Under MQTT 3.1.1 a broker may acknowledge a publish it drops (Mosquitto 2.0: one its ACL
    denies); only end-to-end acks make that safe (docs/uplink.md)."""
    path = config(
        tmp_path,
        """
        [[upstream]]
        id = "city"
        brokers = ["mqtt://127.0.0.1:1"]
        [[upstream]]
        id = "nats"
        brokers = ["mqtt://127.0.0.1:2"]
        topic_prefix = "nats"
        protocol = "3.1.1"
        """,
    )
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output  # a warning, not an error
    assert (
        "upstream[1] (id 'nats').protocol: warning: under MQTT 3.1.1 a broker may acknowledge a publish"
        in result.output
    )
    assert "set e2e_ack = true" in result.output and "'city').protocol" not in result.output
