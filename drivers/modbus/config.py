"""Config models of the Modbus driver: buses (TCP, RTU, RTU over TCP), devices and points.

They extend the gateway's base models; the config loader validates profile point tables with
`ModbusPointConfig` and device tables with `ModbusDeviceConfig`, so every message here ends up
next to the key path where it was found.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from citynerve.gateway.api import BusConfig, DeviceConfig, PointConfig, SerialSettings

Table = Literal["coil", "discrete", "input", "holding"]
DataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
]
Order = Literal["big", "little"]

BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})
WRITABLE_TABLES: frozenset[str] = frozenset({"coil", "holding"})

REGISTERS_OF_TYPE: dict[str, int] = {
    "bool": 1,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "int64": 4,
    "uint64": 4,
    "float64": 4,
}
"""Registers each fixed-size type occupies (strings take `length`)."""

_FLOAT32_MAX = 3.4028234663852886e38
_RAW_RANGES: dict[str, tuple[int, int] | tuple[float, float]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
    "float32": (-_FLOAT32_MAX, _FLOAT32_MAX),
}


class ModbusPointConfig(PointConfig):
    """Where one point lives on a Modbus device and how its registers become a value.

    Orders: `word_order` is the order of the 16-bit registers of a multi-register value,
    `byte_order` the order of the two bytes inside each register. ABCD = big/big,
    CDAB = word little/byte big, BADC = word big/byte little, DCBA = little/little.
    """

    table: Table
    address: int = Field(ge=0, le=65535, description="0-based protocol address (register 40001 is 0)")
    type: DataType = "uint16"
    word_order: Order = "big"
    byte_order: Order = "big"
    length: int | None = Field(default=None, ge=1, le=125, description="registers of a string")
    bit: int | None = Field(default=None, ge=0, le=15, description="a bool inside a register (0 = LSB)")
    encoding: Literal["ascii", "latin-1", "utf-8"] = "ascii"

    @model_validator(mode="before")
    @classmethod
    def _bool_default_for_bit_tables(cls, data: Any) -> Any:
        # Coils and discrete inputs only hold bools: spare installers from writing type = "bool".
        if isinstance(data, dict) and data.get("table") in BIT_TABLES and "type" not in data:
            return {**data, "type": "bool"}
        return data

    @model_validator(mode="after")
    def _combination(self) -> ModbusPointConfig:
        if self.table in BIT_TABLES:
            if self.type != "bool":
                raise ValueError(f"a {self.table} holds one bit: type must be 'bool', not {self.type!r}")
            if self.bit is not None:
                raise ValueError(f"'bit' selects a bit inside a register; a {self.table} is already a bit")
            if self.length is not None:
                raise ValueError(f"'length' is for strings in registers, not for a {self.table}")
        else:
            if self.type == "bool" and self.bit is None:
                raise ValueError(
                    f"a bool from the {self.table} table needs 'bit' (0..15) to say which bit of the register"
                )
            if self.bit is not None and self.type != "bool":
                raise ValueError(f"'bit' is only for type 'bool', not {self.type!r}")
            if self.type == "string" and self.length is None:
                raise ValueError("a string needs 'length' (registers, 2 characters each)")
            if self.type != "string" and self.length is not None:
                raise ValueError(f"'length' is only for strings; {self.type} has a fixed size")
        if self.address + self.register_count - 1 > 65535:
            raise ValueError(
                f"address {self.address} + {self.register_count} registers runs past the last address 65535"
            )
        if self.writable:
            if self.table not in WRITABLE_TABLES:
                raise ValueError(
                    f"the {self.table} table is read-only: writable points must be coil or holding"
                )
            if self.bit is not None:
                raise ValueError(
                    "a bit inside a register cannot be written alone (the other 15 bits would be overwritten)"
                )
        return self

    def span(self) -> tuple[str, int, int]:
        """(table, first, last address) this point occupies: the config loader refuses two
        writable points whose spans overlap (they would overwrite each other)."""
        return (self.table, self.address, self.address + self.register_count - 1)

    def value_domain(self) -> dict[str, Any] | None:
        """What a write accepts: the register type's range. A write carries the device's raw value
        (the driver's `write` does not apply `scale`/`offset`), so the domain is in raw units."""
        if self.type == "bool":
            return {"type": "boolean"}
        if self.type == "string":
            return {"type": "string", "max_length": 2 * (self.length or 1)}
        if self.type == "float64":
            return {"type": "number"}
        lo, hi = _RAW_RANGES[self.type]
        return {"type": "number" if self.type == "float32" else "integer", "min": lo, "max": hi}

    @property
    def register_count(self) -> int:
        """Registers (or bits, for coil/discrete) this point occupies."""
        if self.table in BIT_TABLES:
            return 1
        if self.type == "string":
            return self.length or 1
        return REGISTERS_OF_TYPE[self.type]


class ModbusDeviceConfig(DeviceConfig):
    """A Modbus device: `address` is its unit id; request limits shape the read plan."""

    # Unit 0 is the serial line's broadcast (Modbus over Serial Line 1.02, 2.2): nobody answers.
    UNIT_0_IS_BROADCAST: ClassVar[bool] = True

    address: int = Field(ge=0, le=247, description="unit id (slave address); 0 is broadcast")  # type: ignore[assignment]
    points: dict[str, ModbusPointConfig] = Field(default_factory=dict)  # type: ignore[assignment]
    max_request_registers: int = Field(default=125, ge=1, le=125, description="registers per read")
    max_request_bits: int = Field(default=2000, ge=1, le=2000, description="coils/inputs per read")
    max_gap: int = Field(
        default=10, ge=0, le=124, description="unused registers a read may span to merge two reads"
    )
    timeout_s: float | None = Field(default=None, gt=0, le=60, description="overrides the bus timeout")
    single_register_write_fc16: bool = Field(
        default=False, description="write one register with FC 16 (some devices lack FC 6)"
    )
    register_base: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="added to every point's address: one of several instances behind one unit id "
        "(a DALI gateway's ballast at short address n is at 100 x n)",
    )

    @model_validator(mode="after")
    def _shift_to_register_base(self) -> ModbusDeviceConfig:
        # The profile's addresses are those of instance 0; this device's are `register_base` on.
        # A device with a base holds its own point table (the shared one is left as it is).
        points = self.points if isinstance(self.points, dict) else {}
        if not self.register_base or not points:
            return self
        shifted: dict[str, ModbusPointConfig] = {}
        for name, p in points.items():
            if not isinstance(p, ModbusPointConfig):
                return self
            last = p.address + self.register_base + p.register_count - 1
            if last > 65535:
                raise ValueError(
                    f"register_base {self.register_base} moves point {name} (address {p.address}) "
                    f"past the last address 65535"
                )
            shifted[name] = p.model_copy(update={"address": p.address + self.register_base})
        self.__dict__["points"] = shifted  # frozen model: set once, while it is being built
        return self

    @model_validator(mode="after")
    def _points_fit_one_request(self) -> ModbusDeviceConfig:
        # A point is never split over two reads, so each must fit this device's request size.
        # (The config loader also checks devices with `points` replaced by anything: skip that.)
        points = self.points if isinstance(self.points, dict) else {}
        too_long = [
            f"{name} ({p.register_count} registers)"
            for name, p in points.items()
            if isinstance(p, ModbusPointConfig)
            and p.table not in BIT_TABLES
            and p.register_count > self.max_request_registers
        ]
        reads = any(isinstance(p, ModbusPointConfig) and p.enabled for p in points.values())
        if self.UNIT_0_IS_BROADCAST and self.address == 0 and reads:
            raise ValueError(
                "unit id 0 is the broadcast address: nothing answers a read, so its points must be "
                "enabled = false (they can still be written)"
            )
        if too_long:
            raise ValueError(
                f"max_request_registers = {self.max_request_registers} is shorter than point "
                f"{', '.join(too_long)}: a point is read in one request"
            )
        return self


class ModbusTcpDeviceConfig(ModbusDeviceConfig):
    """A device on a Modbus TCP bus. The MBAP unit id may be 0..255: a device on the network
    itself is addressed by its IP address, and the Messaging Implementation Guide (1.0b, 4.4.2)
    has it addressed as 255, or 0 (a TCP gateway uses 1..247 for the serial devices behind it)."""

    UNIT_0_IS_BROADCAST: ClassVar[bool] = False
    address: int = Field(  # type: ignore[assignment]
        ge=0,
        le=255,
        description="unit id: 1..247 behind a TCP gateway, 255 or 0 for a TCP device itself",
    )
    reply_unit: int | None = Field(
        default=None,
        ge=0,
        le=255,
        description="the unit id this device's replies carry, when it does not copy the request's "
        "(some TCP devices always answer 0 or 255); unset: a reply must carry `address`",
    )


MAX_HOST_NAME = 253
"""Characters of a DNS name (RFC 1035: 255 octets on the wire)."""


def check_host(value: str) -> str:
    """An IP literal, or a host name that resolvers take: IDNA-encodable, labels of 1..63
    characters (one trailing dot allowed), 253 characters in all. `plc..local` or a 64-character
    label used to pass config and then raise UnicodeError out of the bus's open."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if any(c.isspace() or c in "/:@[]" for c in value):
        raise ValueError(f"{value!r} is not a host name or IP address (no spaces, '/', ':', '@' or brackets)")
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    bad = [label for label in labels if not 1 <= len(label) <= 63]
    if bad:
        raise ValueError(f"{value!r} is not a host name: every dot-separated label needs 1..63 characters")
    try:
        encoded = name.encode("idna")
    except UnicodeError as err:
        raise ValueError(f"{value!r} is not a host name a resolver takes (IDNA): {err}") from err
    if len(encoded) > MAX_HOST_NAME:
        raise ValueError(f"host name of {len(encoded)} characters (at most {MAX_HOST_NAME})")
    return value


HostName = Annotated[str, Field(min_length=1, max_length=MAX_HOST_NAME + 1), AfterValidator(check_host)]


class ModbusTcpBusConfig(BusConfig):
    """Modbus TCP to one endpoint (a device, or a TCP gateway in front of several unit ids)."""

    protocol: Literal["modbus_tcp"] = "modbus_tcp"
    host: HostName
    port: int = Field(default=502, ge=1, le=65535)


class ModbusRtuBusConfig(BusConfig, SerialSettings):
    """Modbus RTU on a serial line. `port` is any pyserial URL (/dev/ttyUSB0, socket://h:p, ...)."""

    protocol: Literal["modbus_rtu"] = "modbus_rtu"
    handle_local_echo: bool = Field(default=False, description="the adapter echoes what it sends")


class ModbusRtuOverTcpBusConfig(BusConfig):
    """RTU frames (with CRC) tunnelled through a TCP socket, as serial-to-Ethernet converters do."""

    protocol: Literal["modbus_rtu_over_tcp"] = "modbus_rtu_over_tcp"
    host: HostName
    port: int = Field(default=502, ge=1, le=65535)


ModbusBusConfig = ModbusTcpBusConfig | ModbusRtuBusConfig | ModbusRtuOverTcpBusConfig
