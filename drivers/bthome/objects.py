"""The BTHome v2 object table: object id -> name, length, format, factor, unit.

Facts from the BTHome format document (bthome.io/format), the same table Home Assistant's
`bthome-ble` parser uses (`MEAS_TYPES`). One row per object id; the codec is driven by this table
only, so adding an object id is adding a row.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class ValueFormat(enum.StrEnum):
    """How an object's bytes become a value."""

    UINT = "uint"  # little-endian unsigned integer x factor
    SINT = "sint"  # little-endian signed integer x factor
    BINARY = "binary"  # one byte, 0 = off / 1 = on
    BUTTON = "button"  # one byte event code
    DIMMER = "dimmer"  # event code + steps
    TEXT = "text"  # length byte + UTF-8
    RAW = "raw"  # length byte + bytes
    COMMAND = "command"  # length byte (low 5 bits = argument count) + opcode + arguments
    TIMESTAMP = "timestamp"  # uint32 seconds since the epoch
    DEVICE_TYPE = "device_type"  # uint16 manufacturer device type id
    FIRMWARE = "firmware"  # 3 or 4 version components, least significant first


VARIABLE_LENGTH = frozenset({ValueFormat.TEXT, ValueFormat.RAW, ValueFormat.COMMAND})


@dataclass(frozen=True, slots=True)
class ObjectType:
    """One BTHome object id."""

    id: int
    name: str
    length: int  # data bytes after the id; for variable-length formats, 0 (a length byte follows)
    format: ValueFormat
    factor: float = 1.0
    unit: str = ""

    @property
    def decimals(self) -> int:
        """Decimal places the factor carries (0.01 -> 2): values are rounded to these, as upstream."""
        return max(0, -math.floor(math.log10(self.factor) + 1e-12)) if self.factor != 1 else 0


def _n(id: int, name: str, length: int, factor: float = 1.0, unit: str = "") -> ObjectType:
    return ObjectType(id, name, length, ValueFormat.UINT, factor, unit)


def _s(id: int, name: str, length: int, factor: float = 1.0, unit: str = "") -> ObjectType:
    return ObjectType(id, name, length, ValueFormat.SINT, factor, unit)


def _b(id: int, name: str) -> ObjectType:
    return ObjectType(id, name, 1, ValueFormat.BINARY)


_ROWS: tuple[ObjectType, ...] = (
    _n(0x00, "packet_id", 1),
    _n(0x01, "battery", 1, 1, "%"),
    _s(0x02, "temperature", 2, 0.01, "°C"),
    _n(0x03, "humidity", 2, 0.01, "%"),
    _n(0x04, "pressure", 3, 0.01, "hPa"),
    _n(0x05, "illuminance", 3, 0.01, "lx"),
    _n(0x06, "mass_kg", 2, 0.01, "kg"),
    _n(0x07, "mass_lb", 2, 0.01, "lb"),
    _s(0x08, "dewpoint", 2, 0.01, "°C"),
    _n(0x09, "count", 1),
    _n(0x0A, "energy", 3, 0.001, "kWh"),
    _n(0x0B, "power", 3, 0.01, "W"),
    _n(0x0C, "voltage", 2, 0.001, "V"),
    _n(0x0D, "pm2_5", 2, 1, "µg/m³"),
    _n(0x0E, "pm10", 2, 1, "µg/m³"),
    _b(0x0F, "generic_boolean"),
    _b(0x10, "power_on"),
    _b(0x11, "opening"),
    _n(0x12, "co2", 2, 1, "ppm"),
    _n(0x13, "tvoc", 2, 1, "µg/m³"),
    _n(0x14, "moisture", 2, 0.01, "%"),
    _b(0x15, "battery_low"),
    _b(0x16, "battery_charging"),
    _b(0x17, "carbon_monoxide"),
    _b(0x18, "cold"),
    _b(0x19, "connectivity"),
    _b(0x1A, "door"),
    _b(0x1B, "garage_door"),
    _b(0x1C, "gas"),
    _b(0x1D, "heat"),
    _b(0x1E, "light"),
    _b(0x1F, "lock"),
    _b(0x20, "moisture_detected"),
    _b(0x21, "motion"),
    _b(0x22, "moving"),
    _b(0x23, "occupancy"),
    _b(0x24, "plug"),
    _b(0x25, "presence"),
    _b(0x26, "problem"),
    _b(0x27, "running"),
    _b(0x28, "safety"),
    _b(0x29, "smoke"),
    _b(0x2A, "sound"),
    _b(0x2B, "tamper"),
    _b(0x2C, "vibration"),
    _b(0x2D, "window"),
    _n(0x2E, "humidity", 1, 1, "%"),
    _n(0x2F, "moisture", 1, 1, "%"),
    ObjectType(0x3A, "button", 1, ValueFormat.BUTTON),
    ObjectType(0x3B, "command", 0, ValueFormat.COMMAND),
    ObjectType(0x3C, "dimmer", 2, ValueFormat.DIMMER),
    _n(0x3D, "count", 2),
    _n(0x3E, "count", 4),
    _s(0x3F, "rotation", 2, 0.1, "°"),
    _n(0x40, "distance_mm", 2, 1, "mm"),
    _n(0x41, "distance_m", 2, 0.1, "m"),
    _n(0x42, "duration", 3, 0.001, "s"),
    _n(0x43, "current", 2, 0.001, "A"),
    _n(0x44, "speed", 2, 0.01, "m/s"),
    _s(0x45, "temperature", 2, 0.1, "°C"),
    _n(0x46, "uv_index", 1, 0.1),
    _n(0x47, "volume", 2, 0.1, "L"),
    _n(0x48, "volume_ml", 2, 1, "mL"),
    _n(0x49, "volume_flow_rate", 2, 0.001, "m³/h"),
    _n(0x4A, "voltage", 2, 0.1, "V"),
    _n(0x4B, "gas_volume", 3, 0.001, "m³"),
    _n(0x4C, "gas_volume", 4, 0.001, "m³"),
    _n(0x4D, "energy", 4, 0.001, "kWh"),
    _n(0x4E, "volume", 4, 0.001, "L"),
    _n(0x4F, "water", 4, 0.001, "L"),
    ObjectType(0x50, "timestamp", 4, ValueFormat.TIMESTAMP, 1, "s"),
    _n(0x51, "acceleration", 2, 0.001, "m/s²"),
    _n(0x52, "gyroscope", 2, 0.001, "°/s"),
    ObjectType(0x53, "text", 0, ValueFormat.TEXT),
    ObjectType(0x54, "raw", 0, ValueFormat.RAW),
    _n(0x55, "volume_storage", 4, 0.001, "L"),
    _n(0x56, "conductivity", 2, 1, "µS/cm"),
    _s(0x57, "temperature", 1, 1, "°C"),
    _s(0x58, "temperature", 1, 0.35, "°C"),
    _s(0x59, "count", 1),
    _s(0x5A, "count", 2),
    _s(0x5B, "count", 4),
    _s(0x5C, "power", 4, 0.01, "W"),
    _s(0x5D, "current", 2, 0.001, "A"),
    _n(0x5E, "direction", 2, 0.01, "°"),
    _n(0x5F, "precipitation", 2, 0.1, "mm"),
    _n(0x60, "channel", 1),
    _n(0x61, "rotational_speed", 2, 1, "rpm"),
    _s(0x62, "speed", 4, 0.000001, "m/s"),
    _s(0x63, "acceleration", 4, 0.000001, "m/s²"),
    _n(0x64, "light_level", 1),
    _n(0x65, "settings_revision", 1),
    ObjectType(0xF0, "device_type_id", 2, ValueFormat.DEVICE_TYPE),
    ObjectType(0xF1, "firmware_version", 4, ValueFormat.FIRMWARE),
    ObjectType(0xF2, "firmware_version", 3, ValueFormat.FIRMWARE),
)

OBJECTS: dict[int, ObjectType] = {row.id: row for row in _ROWS}
"""Every object id of the BTHome v2 format, by id."""

OBJECT_NAMES: frozenset[str] = frozenset(row.name for row in _ROWS)
"""Names usable in a point's `object` field (several ids may share one, e.g. temperature)."""

BUTTON_EVENTS: dict[int, str] = {
    0x00: "none",
    0x01: "press",
    0x02: "double_press",
    0x03: "triple_press",
    0x04: "long_press",
    0x05: "long_double_press",
    0x06: "long_triple_press",
    0x80: "hold_press",
    0x81: "hold_release",
}

DIMMER_EVENTS: dict[int, str] = {0x00: "none", 0x01: "rotate_left", 0x02: "rotate_right"}
