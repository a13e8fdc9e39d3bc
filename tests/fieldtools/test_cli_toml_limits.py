"""The CLI reads TOML within bounds, through the real commands: a file nested thousands deep is a
typed error naming the file (it was a RecursionError traceback), a file over 16 MiB is refused
without being read whole, a FIFO or device is refused unread, and a real config of 1,000 devices
(~200 KB) is far inside the bound and passes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from citynerve.gateway.cli import main
from citynerve.gateway.config.tomlfile import MAX_TOML_BYTES

from .conftest import ADDRESS_CODE, gateway_toml

COMMANDS = (("diag", "rules", "check"), ("config", "check"))


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _refused(result: Result, file: Path | str, why: str) -> None:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # one line, no traceback
    assert str(file) in result.output and why in result.output, result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_deep_nesting_is_a_typed_error_naming_the_file(tmp_path: Path, command: tuple[str, ...]) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 3000 + "]" * 3000 + "\n")
    _refused(_cli(*command, str(deep)), deep, "nested too deeply")
    inline = tmp_path / "inline.toml"
    inline.write_text("a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n")
    _refused(_cli(*command, str(inline)), inline, "nested too deeply")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_file_over_the_bound_is_refused_unread(tmp_path: Path, command: tuple[str, ...]) -> None:
    big = tmp_path / "big.toml"
    with big.open("wb") as f:
        f.truncate(2 << 30)  # sparse: 2 GiB that take no disk; reading it whole took the memory
    _refused(_cli(*command, str(big)), big, f"larger than {MAX_TOML_BYTES}")
    _refused(_cli(*command, "/dev/zero"), "/dev/zero", "not a regular file")  # never read at all


@pytest.mark.parametrize("command", COMMANDS)
def test_a_fifo_is_refused_not_waited_on(tmp_path: Path, command: tuple[str, ...]) -> None:
    """Opening a FIFO for reading waits for a writer for ever: a subprocess, so a hang fails."""
    fifo = tmp_path / "stale.toml"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", *command, str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(fifo) in proc.stdout + proc.stderr and "not a regular file" in proc.stdout + proc.stderr


def _config_of(n_buses: int, per_bus: int) -> str:
    text = gateway_toml("127.0.0.1", 15020, devices=(), rules=False)
    for b in range(2, n_buses + 1):
        text += (
            f'\n[[buses]]\nid = "tcp-{b}"\nprotocol = "modbus_tcp"\nhost = "127.0.0.1"\nport = {15020 + b}\n'
        )
    for b in range(1, n_buses + 1):
        for unit in range(1, per_bus + 1):
            text += textwrap.dedent(
                f"""
                [[devices]]
                id = "wm-{b}-{unit:03d}"
                bus = "tcp-{b}"
                profile = "modbus-water-meter"
                address = {unit}
                location = {{ address_code = "{ADDRESS_CODE}", building = "{b}", room = "{unit}" }}
                """
            )
    return text


def test_a_config_of_a_thousand_devices_passes(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(_config_of(5, 200))
    assert config.stat().st_size * 50 < MAX_TOML_BYTES  # 50 such sites in one file would still pass
    result = _cli("config", "check", str(config))
    assert result.exit_code == 0, result.output
    assert "1000 devices" in result.output
    os.truncate(config, MAX_TOML_BYTES + 1)
    _refused(_cli("config", "check", str(config)), config, "larger than")
