"""The raw-write guard reads an address as the driver does ("10", "0x0a"), refuses one that is no
integer (10.7 was truncated to 10 by the driver and written past the guard), and a line probe's
parameters are lists of what a serial line takes, refused by name otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.api import DiagParamError
from citynerve.gateway.bus.probe import probe_params
from citynerve.gateway.config import load_config
from citynerve.gateway.diagbus import RawWriteRefusedError, bus_diag
from tests.modbus.modbus_support import start_bank_server


async def test_a_raw_write_outside_writable_points_is_refused_however_the_address_is_written(
    tmp_path: Path,
) -> None:
    srv = await start_bank_server((1,))
    try:
        (tmp_path / "gw.toml").write_text(
            f"""[gateway]
id = "gw-1"
org = {{ city = "310100", district = "310106", street = "310106013" }}
[control]
socket = "{tmp_path}/control.sock"
[[buses]]
id = "plc"
protocol = "modbus_tcp"
host = "{srv.host}"
port = {srv.port}
[[devices]]
id = "m1"
bus = "plc"
profile = "modbus-water-meter"
address = 1
location = {{ address_code = "320508001001" }}
"""
        )
        cfg = load_config(tmp_path / "gw.toml")
        for address in (10, "10", "0x0a", 10.7, 10.0):
            params = {"raw": True, "unit": 1, "table": "holding", "address": address, "value": 4242}
            with pytest.raises(RawWriteRefusedError):
                await bus_diag(cfg, "plc", "write", params)
        assert srv.banks[1].tables["holding"].get(10) is None  # nothing was written
    finally:
        await srv.server.shutdown()


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"bauds": "19200"}, "bauds"),  # was probed as the digits 1, 9, 2, 0, 0
        ({"bauds": 19200}, "bauds"),
        ({"bauds": ["fast"]}, "bauds"),
        ({"bauds": [19200, 1234]}, "bauds"),
        ({"parities": ["X"]}, "parities"),
        ({"stopbits": [3]}, "stopbits"),
        ({"timeout_s": "x"}, "timeout_s"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 60}, "timeout_s"),
    ],
)
def test_probe_parameters_are_checked_by_name(params: dict[str, Any], param: str, tmp_path: Path) -> None:
    from citynerve.drivers.modbus.config import ModbusRtuBusConfig

    bus = ModbusRtuBusConfig(id="rs485-1", protocol="modbus_rtu", port="/dev/ttyUSB0")
    with pytest.raises(DiagParamError) as info:
        probe_params(params, bus)
    assert info.value.param == param and info.value.action == "probe"
    tries, timeout_s = probe_params({"bauds": [19200, 9600], "parities": ["N"], "timeout_s": 0.5}, bus)
    assert {t.baudrate for t in tries} <= {19200, 9600} and timeout_s == 0.5
