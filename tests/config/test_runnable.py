"""`config check` refuses what `citynerve run` cannot open: two serial buses on one port (the second
found the port locked and its devices stayed offline). A control socket whose resolved path is
longer than AF_UNIX allows (107 bytes: `run` died binding it, an ExceptionGroup traceback) is a
warning of `config check` (every other command reads such a config: an example checked where a
release installed it, a register imported) and `run` refuses it in one line, exit 2."""

from __future__ import annotations

import json
import os
import textwrap
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from citynerve.gateway.cli import main
from citynerve.gateway.config import load_config
from citynerve.gateway.config.runnable import MAX_SOCKET_PATH_BYTES

GATEWAY = """[gateway]
id = "gw-1"
org = { city = "310100", district = "310106", street = "310106013" }
"""


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _refused(result: Result, *words: str) -> str:
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    text = " ".join(result.output.split())
    for w in words:
        assert w in text, text
    return text


# -- control socket ------------------------------------------------------------------------------


def test_a_relative_socket_under_a_deep_folder_is_a_warning_and_run_refuses_it(tmp_path: Path) -> None:
    folder = tmp_path.joinpath(*(f"very-long-installation-folder-name-{i:02d}" for i in (1, 2, 3)))
    folder.mkdir(parents=True)
    config = folder / "gw.toml"
    config.write_text(GATEWAY)  # control.socket: the default var/citynerve.sock, relative
    resolved = folder / "var" / "citynerve.sock"
    assert len(os.fsencode(resolved)) > MAX_SOCKET_PATH_BYTES
    (warning,) = [w for w in load_config(config).warnings if w.path == "control.socket"]
    assert "resolves to" in warning.message and "use a shorter absolute path" in warning.message
    check = _cli("config", "check", str(config))
    assert check.exit_code == 0, check.output
    assert "run refuses it" in " ".join(check.output.split()), check.output
    _refused(_cli("run", "-c", str(config)), "control.socket resolves to", "use a shorter absolute path")
    assert not resolved.parent.exists() or not any(resolved.parent.iterdir())  # nothing was started
    config.write_text(GATEWAY + '[control]\nsocket = "/tmp/cn-test.sock"\n')
    assert load_config(config).control.socket == "/tmp/cn-test.sock"
    assert not [w for w in load_config(config).warnings if w.path == "control.socket"]


@pytest.mark.parametrize(("size", "ok"), [(MAX_SOCKET_PATH_BYTES, True), (MAX_SOCKET_PATH_BYTES + 1, False)])
def test_the_socket_path_bound_is_the_kernel_s(tmp_path: Path, size: int, ok: bool) -> None:
    """107 bytes bind (sun_path is 108 with its NUL); 108 do not. Counted in bytes: 'é' is two."""
    stem = "/tmp/é"
    path = stem + "x" * (size - len(os.fsencode(stem)))
    assert len(os.fsencode(path)) == size
    config = tmp_path / "gw.toml"
    config.write_text(GATEWAY + f'[control]\nsocket = "{path}"\n')
    warned = [w for w in load_config(config).warnings if w.path == "control.socket"]
    assert (warned == []) is ok, warned
    if not ok:
        assert f"{size} bytes" in warned[0].message
        _refused(_cli("run", "-c", str(config)), "control.socket", f"{size} bytes")


# -- serial ports --------------------------------------------------------------------------------


@pytest.fixture
def pty_port() -> Iterator[str]:
    """A real serial device (the follower end of a pty pair)."""
    leader, follower = os.openpty()
    tty.setraw(follower)
    try:
        yield os.ttyname(follower)
    finally:
        os.close(leader)
        os.close(follower)


def _bus(bus_id: str, protocol: str, port: str, extra: str = "") -> str:
    return (
        textwrap.dedent(
            f"""
        [[buses]]
        id = "{bus_id}"
        protocol = "{protocol}"
        port = "{port}"
        """
        )
        + extra
    )


def test_two_serial_buses_on_one_port_are_refused(tmp_path: Path, pty_port: str) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(GATEWAY + _bus("riser-a", "modbus_rtu", pty_port) + _bus("riser-b", "dlt645", pty_port))
    _refused(
        _cli("config", "check", str(config)), "buses[1] (id 'riser-b').port: already used by bus 'riser-a'"
    )
    # The same device by another name (the /dev/serial/by-id link an installer copies) is the same port.
    link = tmp_path / "usb-FTDI-if00-port0"
    link.symlink_to(pty_port)
    config.write_text(
        GATEWAY + _bus("riser-a", "modbus_rtu", pty_port) + _bus("riser-b", "firepanel", str(link))
    )
    _refused(
        _cli("config", "check", str(config)), "buses[1] (id 'riser-b').port: already used by bus 'riser-a'"
    )


def test_ports_that_do_not_clash_pass(tmp_path: Path, pty_port: str) -> None:
    """A disabled bus opens nothing (the spare protocol of a line); pyserial URLs open no local
    device; Modbus TCP buses share a TCP port number (502) on different hosts."""
    config = tmp_path / "gw.toml"
    config.write_text(
        GATEWAY
        + _bus("riser-a", "modbus_rtu", pty_port)
        + _bus("riser-spare", "dlt645", pty_port, "enabled = false\n")
        + _bus("loop-a", "modbus_rtu", "loop://")
        + _bus("loop-b", "modbus_rtu", "loop://")
        + '\n[[buses]]\nid = "tcp-a"\nprotocol = "modbus_tcp"\nhost = "10.0.0.1"\nport = 502\n'
        + '\n[[buses]]\nid = "tcp-b"\nprotocol = "modbus_tcp"\nhost = "10.0.0.2"\nport = 502\n'
    )
    r = _cli("config", "check", str(config))
    assert r.exit_code == 0, r.output


# -- baud rates ----------------------------------------------------------------------------------


def test_a_typo_d_baud_rate_is_a_warning_naming_the_bus_and_the_rate_meant(tmp_path: Path) -> None:
    # `9600` typed `96000`: init and config check passed it silently, and the line stayed silent.
    config = tmp_path / "gw.toml"
    init = _cli(
        "init", "-c", str(config), "--gateway-id", "gw-1", "--city", "310100", "--district", "310106",
        "--street", "310106013", "--bus", "rs485-1:modbus_rtu:/dev/ttyUSB7:96000:N",
        "--bus", "meters:dlt645:/dev/ttyUSB8:2400", "--no-interactive",
    )  # fmt: skip
    assert init.exit_code == 0, init.output
    warning = "bus 'rs485-1': 96000 baud is not a standard rate; did you mean 9600?"
    assert warning in " ".join(init.output.split()), init.output
    check = _cli("config", "check", str(config))
    assert check.exit_code == 0, check.output  # a warning: odd rates exist
    text = " ".join(check.output.split())
    assert f"buses[0] (id 'rs485-1').baudrate: warning: {warning}" in text, text
    assert "'meters'" not in text, text  # 2400 is standard
    as_json = json.loads(_cli("config", "check", str(config), "--json").output)
    assert [(w["path"], w["message"]) for w in as_json["warnings"] if "baud" in w["message"]] == [
        ("buses[0].baudrate", f"warning: {warning}")
    ]
    config.write_text(config.read_text().replace("96000", "14400"))  # not a typo: the nearest rate
    text = " ".join(_cli("config", "check", str(config)).output.split())
    assert "14400 baud is not a standard rate; did you mean 19200?" in text, text


def test_no_baud_warning_where_the_rate_sets_no_line(tmp_path: Path) -> None:
    """socket:// (a raw TCP bridge: the device server's own settings hold) and loop:// set no line's
    rate: 96000 there is not a typo to warn of (it was, at init and config check). rfc2217:// sends
    the rate to the device server, which sets its UART with it: still warned, like a local port."""
    config = tmp_path / "gw.toml"
    init = _cli(
        "init", "-c", str(config), "--gateway-id", "gw-1", "--city", "310100", "--district", "310106",
        "--street", "310106013", "--bus", "rs485-1:modbus_rtu:socket://10.0.0.5:4001:96000:N",
        "--no-interactive",
    )  # fmt: skip
    assert init.exit_code == 0, init.output
    assert "not a standard rate" not in init.output, init.output
    config.write_text(
        GATEWAY
        + _bus("bridge", "modbus_rtu", "SOCKET://10.0.0.5:4001", "baudrate = 96000\n")
        + _bus("loop", "dlt645", "loop://", "baudrate = 24000\n")
        + _bus("telnet", "modbus_rtu", "rfc2217://10.0.0.6:4001", "baudrate = 96000\n")
    )
    warnings = [(w.path, w.message) for w in load_config(config).warnings if "standard rate" in w.message]
    assert warnings == [
        ("buses[2].baudrate", "warning: bus 'telnet': 96000 baud is not a standard rate; did you mean 9600?")
    ]
