"""Config models of the BTHome driver: point (an object of the advert), device (a node by MAC)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from citynerve.drivers.bthome.codec import Advert, Scalar, normalize_mac, parse_key
from citynerve.drivers.bthome.objects import OBJECT_NAMES, OBJECTS
from citynerve.gateway.api import (
    ConfigError,
    ConfigIssue,
    DeviceConfig,
    PointConfig,
    SecretPath,
    Severity,
    decode_text,
    in_field_words,
)

SeverityName = Literal["info", "warning", "minor", "major", "critical"]

KEY_FILE_MAX_BYTES = 128
"""A key file holds 32 hex digits, perhaps with ':' or spaces between bytes and a line end."""


def parse_object_ref(value: int | str) -> int | str:
    """A point's `object`: an id (63, "0x3f") or a name from the BTHome table ("rotation")."""
    if isinstance(value, bool):
        raise ValueError("object must be a BTHome object name or id")
    if isinstance(value, int):
        if value not in OBJECTS:
            raise ValueError(f"unknown BTHome object id {value:#04x}")
        return value
    text = value.strip().lower()
    if text.startswith("0x"):
        try:
            return parse_object_ref(int(text, 16))
        except ValueError as err:
            raise ValueError(f"bad object id {value!r}: {err}") from err
    if text not in OBJECT_NAMES:
        raise ValueError(f"unknown BTHome object {value!r} (known: {', '.join(sorted(OBJECT_NAMES))})")
    return text


class BTHomePoint(PointConfig):
    """One object of a node's advert. Repeated objects (two temperatures) are told apart by `index`.

    With `event_kind`, the driver raises that event when the value turns true (or non-zero) and
    clears it when it turns false: the node already applied its hold time, so this is the alarm.
    """

    object: int | str = Field(description="BTHome object name (e.g. 'rotation') or id (e.g. '0x3f')")
    index: int = Field(default=0, ge=0, le=15, description="which occurrence of a repeated object")
    event_kind: str = Field(
        default="", max_length=64, description="e.g. manhole_tilt, water_high, smoke, tamper"
    )
    event_severity: SeverityName = "major"
    absent_means_off: bool = Field(
        default=False,
        description="an advert without this object means false: for an object the node sends only while "
        "it is true (device_fw's 0x26 problem, in the place of the reading it lacks); with event_kind, "
        "such an advert clears the event",
    )

    @field_validator("object", mode="before")
    @classmethod
    def _object(cls, v: Any) -> int | str:
        if not isinstance(v, int | str):
            raise ValueError("object must be a BTHome object name or id")
        return parse_object_ref(v)

    def value_in(self, advert: Advert) -> Scalar | None:
        """This point's value in one advert; None when the advert does not carry it."""
        m = advert.find(self.object, self.index)
        if m is not None:
            return m.value
        return False if self.absent_means_off else None

    @property
    def severity(self) -> Severity:
        return Severity[self.event_severity.upper()]


class BTHomeDevice(DeviceConfig):
    """One BTHome node. `address` is its MAC; `key` (32 hex digits) or `key_file` holds its AES key.

    `poll_interval_s` is the heartbeat the node is expected to keep: the bus owner marks it offline
    after `bus.offline_after` heartbeats are missed.
    """

    address: str = Field(description="the node's BLE MAC, e.g. 'A4:C1:38:12:34:56'")
    key: SecretStr | None = Field(default=None, description="AES-128 key, 32 hex digits")
    key_file: SecretPath | None = Field(
        default=None, description=f"file holding the key (32 hex digits; at most {KEY_FILE_MAX_BYTES} bytes)"
    )
    points: dict[str, BTHomePoint] = Field(default_factory=dict)  # type: ignore[assignment]

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, v: object) -> str:
        if not isinstance(v, str):
            raise ValueError("address must be a MAC string like 'A4:C1:38:12:34:56'")
        return normalize_mac(v)

    @field_validator("key")
    @classmethod
    def _key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None:
            try:
                parse_key(v.get_secret_value())
            except ValueError as err:
                raise in_field_words(str(err).replace("a BTHome key", "the key")) from None
        return v

    @model_validator(mode="after")
    def _one_key(self) -> BTHomeDevice:
        if self.key is not None and self.key_file is not None:
            raise ValueError("give key or key_file, not both")
        return self

    @property
    def encrypted(self) -> bool:
        """A device with a key must send encrypted adverts; plaintext from it is refused."""
        return self.key is not None or self.key_file is not None

    def read_files(self) -> None:
        self.resolve_key()

    def resolve_key(self, config_file: str = "") -> bytes | None:
        """The key bytes, reading `key_file` if given. Raises ConfigError naming the device."""
        if self.key is not None:
            return parse_key(self.key.get_secret_value())
        if self.key_file is None:
            return None
        where = f"devices[{self.id}].key_file"
        try:
            with self.key_file.open("rb") as f:
                raw = f.read(KEY_FILE_MAX_BYTES + 1)  # a wrong path (a log, a disk image) is not read whole
            if len(raw) > KEY_FILE_MAX_BYTES:
                raise ValueError(f"longer than {KEY_FILE_MAX_BYTES} bytes: not a key file (32 hex digits)")
            return parse_key(decode_text(raw).strip())  # a leading BOM (a Windows editor) is not the key
        except OSError as err:
            raise ConfigError(
                [ConfigIssue(config_file, where, f"cannot read {self.key_file}: {err}")]
            ) from err
        except ValueError as err:
            raise ConfigError([ConfigIssue(config_file, where, f"{self.key_file}: {err}")]) from err
