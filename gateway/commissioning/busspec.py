"""Bus specs on the command line: `rs485-1:modbus_rtu:/dev/ttyUSB0:9600:N` -> a `[[buses]]` table.

Shapes, chosen by the fields of the protocol's bus model (so a new driver needs no change here):
- serial, flat (Modbus RTU):           `ID:PROTOCOL:PORT[:BAUD[:PARITY[:STOPBITS]]]`
- serial, nested `[buses.serial]`:     the same shape (DL/T 645, CJ/T 188: 2400 8E1 when omitted)
- TCP (Modbus TCP, RTU over TCP):      `ID:PROTOCOL:HOST[:PORT]`
- BLE (BTHome):                        `ID:PROTOCOL[:ADAPTER]`
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from citynerve.gateway.api import PermanentError
from citynerve.gateway.config.drivers import DriverNotFoundError, driver_spec


class BusSpecError(PermanentError):
    """A `--bus` spec that cannot become a bus table; `spec` is the text, `reason` says why."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(f"bus spec {spec!r}: {reason}")


def _int(spec: str, what: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BusSpecError(spec, f"{what} must be a whole number, not {text!r}") from None


def parse_bus_spec(spec: str) -> dict[str, Any]:
    """Parse one spec into a bus table validated by its driver's bus model. Raises BusSpecError."""
    parts = spec.split(":")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise BusSpecError(spec, "expected ID:PROTOCOL[:...], e.g. rs485-1:modbus_rtu:/dev/ttyUSB0:9600:N")
    bus_id, protocol, rest = parts[0], parts[1], parts[2:]
    try:
        spec_ = driver_spec(protocol)
    except DriverNotFoundError as err:
        raise BusSpecError(spec, err.reason) from err
    fields = spec_.bus_model.model_fields
    table: dict[str, Any] = {"id": bus_id, "protocol": protocol}
    if "serial" in fields or ("port" in fields and "baudrate" in fields):
        # A serial port may itself contain ':' (socket://host:port): the numeric tail is settings.
        port, settings = _split_serial(spec, rest)
        serial: dict[str, Any] = {"port": port}
        if len(settings) > 0:
            serial["baudrate"] = _int(spec, "baud rate", settings[0])
        if len(settings) > 1:
            serial["parity"] = settings[1].upper()
        if len(settings) > 2:
            serial["stopbits"] = _int(spec, "stop bits", settings[2])
        if "serial" in fields:
            table["serial"] = serial
        else:
            table.update(serial)
    elif "host" in fields:
        if not rest or not rest[0]:
            raise BusSpecError(spec, f"{protocol} needs a host: ID:{protocol}:HOST[:PORT]")
        table["host"] = rest[0]
        if len(rest) > 1:
            table["port"] = _int(spec, "TCP port", rest[1])
        if len(rest) > 2:
            raise BusSpecError(spec, f"too many fields for {protocol}: ID:{protocol}:HOST[:PORT]")
    elif "adapter" in fields:
        if rest:
            table["adapter"] = rest[0]
        if len(rest) > 1:
            raise BusSpecError(spec, f"too many fields for {protocol}: ID:{protocol}[:ADAPTER]")
    elif rest:
        raise BusSpecError(spec, f"{protocol} takes no settings on the command line; edit the config")
    try:
        spec_.bus_model.model_validate(table)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise BusSpecError(spec, f"{where}: {first['msg']}") from err
    return table


def _split_serial(spec: str, rest: list[str]) -> tuple[str, list[str]]:
    if not rest or not rest[0]:
        raise BusSpecError(spec, "a serial bus needs a port: ID:PROTOCOL:PORT[:BAUD[:PARITY[:STOPBITS]]]")
    # A pyserial URL (socket://host:port, rfc2217://host:port) carries its own ':'s.
    if len(rest) >= 3 and rest[1].startswith("//") and rest[2].isdigit():
        port, settings = ":".join(rest[:3]), rest[3:]
    elif len(rest) >= 2 and rest[1].startswith("//"):
        port, settings = ":".join(rest[:2]), rest[2:]
    else:
        port, settings = rest[0], rest[1:]
    if len(settings) > 3:
        raise BusSpecError(spec, "too many fields: ID:PROTOCOL:PORT[:BAUD[:PARITY[:STOPBITS]]]")
    return port, settings
