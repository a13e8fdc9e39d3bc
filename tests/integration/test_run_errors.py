"""`citynerve run` faced with a missing serial port, a bad config path, and secrets in the config."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from citynerve.hil.platform import free_port
from tests.integration.conftest import GatewayProcess, counter_profile

HEAD = """
[gateway]
id = "gw-err"
org = { city = "310100", district = "310106", street = "310106013" }
[store]
path = "var/gw.db"
[control]
socket = "var/gw.sock"
[log]
level = "debug"
format = "json"
"""


def test_bad_config_path_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 2 and "nope.toml: no such file" in lines[1], proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_serial_port_is_one_clear_line_and_the_gateway_keeps_running(
    tmp_path: Path, gateway_process: type[GatewayProcess]
) -> None:
    counter_profile(tmp_path / "profiles")
    password = "pa55-w0rd-never-logged"
    (tmp_path / "broker.pass").write_text(password + "\n")
    (tmp_path / "broker.pass").chmod(0o600)
    config = tmp_path / "gw.toml"
    config.write_text(
        HEAD
        + textwrap.dedent(
            f"""
            [upstream]
            brokers = ["mqtt://127.0.0.1:{free_port()}"]
            username = "gw-err"
            password_file = "broker.pass"
            tls = {{ verify = true }}

            [[buses]]
            id = "rs485-9"
            protocol = "modbus_rtu"
            port = "/dev/ttyUSB-not-plugged-in"
            min_poll_interval_s = 0.05

            [[devices]]
            id = "m-1"
            bus = "rs485-9"
            profile = "test-counter"
            address = 1
            location = {{ address_code = "310106013007" }}
            """
        )
    )
    gw = gateway_process(config)
    gw.start()
    time.sleep(4)
    assert gw.proc is not None and gw.proc.poll() is None, gw.log.read_text()[-2000:]
    gw.stop()
    log = gw.log.read_text()
    lines = [line for line in log.splitlines() if "cannot open channel" in line]
    assert len(lines) == 1, log[-3000:]  # logged once, not once per retry
    assert "ttyUSB-not-plugged-in" in lines[0]
    assert "Traceback" not in log
    assert password not in log
