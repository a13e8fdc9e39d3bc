"""Base config models that every driver extends with its protocol's own fields.

A driver's `DriverSpec` names its bus, device and point models (subclasses of these). The config
loader validates the common structure first, then each entry with its driver's model, so every
error carries the key path where it was found.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AllowInfNan, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

STRICT = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)
"""The model config of every config section: unknown keys are errors, NaN and infinity are refused
in every float field (TOML can spell them: `nan`, `inf`), values are frozen once loaded."""
_STRICT = STRICT

LARGEST = 1e15
"""No configured number is larger than this in magnitude: beyond it a float has lost its units."""

LONGEST_S = 30 * 86400
"""No configured duration is longer than 30 days."""

MAX_UNIT_CHARS = 64
"""Longest unit of a point: every reading carries it, and the store refuses a reading whose unit is
longer than 1,024 characters (store/_codec.py MAX_ID_CHARS); real units are a few characters."""

MAX_DESCRIPTION_CHARS = 1024
"""Longest description of a point (inventory, status page): a sentence or two."""


def _sane(value: float) -> float:
    if abs(value) > LARGEST:
        raise ValueError(f"a number of magnitude at most {LARGEST:g}")
    return value


def _duration(value: float) -> float:
    if not 0 < value <= LONGEST_S:
        raise ValueError(f"a duration in seconds, more than 0 and at most {LONGEST_S} (30 days)")
    return value


# Bounds are validators, not `ge`/`le` metadata, so a field's own `Field(ge=0, le=...)` adds to them
# instead of replacing them.
FiniteFloat = Annotated[float, AllowInfNan(False), AfterValidator(_sane)]
"""The one float type of config models: finite and of a sane magnitude. Fields narrow it further
(`x: FiniteFloat = Field(ge=0)`); the model config refuses NaN/inf in any other float as well."""

Seconds = Annotated[float, AllowInfNan(False), AfterValidator(_duration)]
"""A configured duration: finite, more than 0 s and at most 30 days; fields may narrow it."""

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
"""Ids of gateways, buses, devices and points: letters, digits, `_ . : -`, at most 64 characters.
No `/`, so an id is safe to use as a file name (profiles, keys, state files)."""


IN_FIELD_WORDS = "in_field_words"
"""The type of a validation error whose message already says what is expected and what was found, in
the field's words: a config issue shows it as it is (not "expected: ...; found ...")."""


def in_field_words(message: str) -> PydanticCustomError:
    """A validation error (raise it in a validator) shown as `message`, as it is."""
    return PydanticCustomError(IN_FIELD_WORDS, "{message}", {"message": message})


def meter_address_problem(value: str, *, digits: int, protocol: str) -> str | None:
    """Why `value` is not a `protocol` meter address of `digits` digits, or None when it is one; the
    one wording of every command ("a CJ/T 188 address is 14 digits, found 13 ...")."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        if len(text) == digits:
            return None
        found = str(len(text))
    else:
        found = repr(value[:40])
    return (
        f"a {protocol} address is {digits} digits, found {found} "
        "(as printed on the meter, leading zeros included)"
    )


def is_id(value: object, pattern: str = ID_PATTERN) -> bool:
    """True when `value` is a valid id: check this before using an id in a path."""
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None and ".." not in value


class SecretFile:
    """Marks a `Path` field that holds a secret (key, password, token): `Annotated[Path, SecretFile()]`.

    The config loader refuses such files when group or others may read them."""

    def __repr__(self) -> str:
        return "SecretFile()"


SecretPath = Annotated[Path, SecretFile()]

MAX_SECRET_FILE_BYTES = 16 * 1024
"""Largest secret file read (a password, an HMAC key, a PEM public key are well under 4 KiB): a
wrong path (a log, a disk image, /dev/zero) is refused, not read whole."""


def read_secret_file(path: Path, max_bytes: int = MAX_SECRET_FILE_BYTES) -> bytes:
    """The bytes of a small secret file. Raises OSError when it cannot be read and ValueError when
    it is longer than `max_bytes` (the caller names the setting)."""
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)  # bounded even where st_size says nothing (a pipe, a device)
    if len(data) > max_bytes:
        raise ValueError(f"{path}: longer than {max_bytes} bytes, not a key or password file")
    return data


class _Model(BaseModel):
    model_config = _STRICT


class Location(_Model):
    """Where a device is: the platform places every device by its address code and coordinates."""

    address_code: str = Field(pattern=r"^[0-9]{6,20}$", description="administrative/grid address code")
    lat: FiniteFloat | None = Field(default=None, ge=-90, le=90)
    lon: FiniteFloat | None = Field(default=None, ge=-180, le=180)
    building: str = ""
    floor: str = ""
    room: str = ""
    text: str = Field(default="", description="free-text location, e.g. 'stairwell B, 3F'")


class PointConfig(_Model):
    """One point of a device: the common part. Drivers add where the value lives (register, DI...)."""

    name: str = Field(default="", pattern=r"^$|" + ID_PATTERN)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_CHARS)
    unit: str = Field(default="", max_length=MAX_UNIT_CHARS)
    scale: FiniteFloat = 1.0
    offset: FiniteFloat = 0.0
    poll_interval_s: Seconds | None = Field(default=None, le=86400)
    deadband: FiniteFloat = Field(default=0.0, ge=0)
    max_interval_s: Seconds = Field(default=900.0, le=7 * 86400, description="report at least this often")
    bounds: tuple[FiniteFloat, FiniteFloat] | None = Field(
        default=None,
        description="physical bounds [min, max] of the engineering value; outside them a reading is "
        "suspect (default: shared bounds of the point's unit)",
    )
    writable: bool = False
    enabled: bool = True

    def value_domain(self) -> dict[str, Any] | None:
        """What a write to this point accepts, in engineering units, for the platform (inventory)
        and the command check: {"type": "boolean" | "integer" | "number" | "string", "min", "max",
        "enum", "max_length"} (keys that do not apply left out). None: the driver does not say."""
        return None

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: float) -> float:
        if v == 0:
            raise ValueError("a non-zero scale (0 would make every reading 0)")
        return v

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        # Reversed bounds made every reading suspect, and rules ignore suspect readings.
        if v is not None and v[0] > v[1]:
            raise ValueError(f"bounds [min, max] with min <= max; found [{v[0]:g}, {v[1]:g}]")
        return v


class DeviceConfig(_Model):
    """One device on a bus. Drivers narrow `address` and may add fields (keys, meter type...)."""

    id: str = Field(pattern=ID_PATTERN)
    bus: str
    profile: str
    address: int | str
    name: str = ""
    enabled: bool = True
    poll_interval_s: Seconds | None = Field(default=None, le=86400)
    location: Location
    component_code: str | None = Field(
        default=None, description="16-digit city component id: county(6) class(2) subclass(2) serial(6)"
    )
    tags: tuple[str, ...] = ()
    points: dict[str, PointConfig] = Field(default_factory=dict)
    crown_mm: FiniteFloat | None = Field(
        default=None,
        gt=0,
        le=20_000,
        description="manhole covers: depth of the sewer pipe's crown below the cover (mm), measured at "
        "installation; the gateway derives the point `water_over_crown` (= crown_mm - water_level, mm) "
        "for the manhole pack's surcharge rule",
    )
    rated_current_a: FiniteFloat | None = Field(
        default=None,
        gt=0,
        le=100,
        description="street lamp controllers: the lamp's rated current (A, from its nameplate or driver "
        "sheet); the gateway's point `lamp_dark` (switched on and drawing less than a tenth of it) "
        "feeds the street-lamp pack's no_current rule. Unset: 0.02 A is the no-load limit",
    )

    def read_files(self) -> None:
        """Read the files this device's config names (a key file) as its driver will at start, so
        that `config check` refuses what the driver would. Raises ConfigError naming the key and
        the file. Most devices name none."""

    def event_attrs(self) -> dict[str, Any]:
        """What every event about this device carries, so the platform can place it on the map."""
        return {
            "bus": self.bus,
            "profile": self.profile,
            "component_code": self.component_code,
            "location": self.location.model_dump(exclude_defaults=True),
        }

    @field_validator("component_code")
    @classmethod
    def _component_code(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9]{16}", v):
            raise ValueError("expected a 16-digit city component code, e.g. '3205080101000001'")
        return v


class SerialSettings(_Model):
    """How to open a serial line. `port` is any pyserial URL: /dev/ttyUSB0, socket://host:port, ..."""

    port: str = Field(min_length=1)
    baudrate: int = Field(default=9600, gt=0, le=4_000_000)
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


class BusConfig(_Model):
    """One physical channel (serial port, TCP endpoint, BLE adapter) and how to poll it."""

    id: str = Field(pattern=ID_PATTERN)
    protocol: str
    description: str = ""
    enabled: bool = True
    timeout_s: Seconds = Field(default=1.0, le=60)
    retries: int = Field(
        default=1, ge=0, le=10, description="extra tries of a failed poll of a device that answered its last"
    )
    backoff_initial_s: Seconds = Field(default=5.0, le=3600)
    backoff_max_s: Seconds = Field(default=300.0, le=86400)
    offline_after: int = Field(default=3, ge=1, le=1000, description="failed polls in a row before offline")
    min_poll_interval_s: Seconds | None = Field(
        default=None,
        ge=0.01,
        description="overrides the documented minimum poll interval of this bus type (a fast local PLC)",
    )

    def adapter_node(self) -> str | None:
        """The device node whose presence says the bus's adapter is plugged in (a BLE dongle's
        /dev/ttyACM0, BlueZ's /sys/class/bluetooth/hci0), or None where there is none to look for.
        A serial bus's port is its node already (`gateway.bus.adapter.adapter_port`)."""
        return None
