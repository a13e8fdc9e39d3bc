"""Config models of the CJ/T 188 driver."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from citynerve.drivers.cjt188.codec import DiOrder
from citynerve.drivers.cjt188.readings import STATUS_MAPS, StatusMap
from citynerve.gateway.api import DeviceConfig, PointConfig, in_field_words, meter_address_problem

Field901F = Literal[
    "flow_total",
    "flow_settlement",
    "meter_time",
    "status",
    "valve",
    "battery_low",
    "heat_settlement",
    "heat_total",
    "heat_power",
    "flow_rate",
    "supply_temp",
    "return_temp",
    "working_hours",
]


class Cjt188Point(PointConfig):
    """One value of the meter's 901F reading. `field = "valve"` with `writable = true` also opens and
    closes the valve (DI A017): write "open"/"close" (or true/false)."""

    field: Field901F

    def value_domain(self) -> dict[str, Any] | None:
        if self.field == "valve":  # true/false are accepted too, as open/close
            return {"type": "string", "enum": ["open", "close"]}
        return None

    @model_validator(mode="after")
    def _writable(self) -> Cjt188Point:
        if self.writable and self.field != "valve":
            raise ValueError(f"only the valve can be written, not {self.field!r}")
        return self


ValveState = Literal["open", "closed", "abnormal"]


def _standard_valve_states() -> dict[str, ValveState]:
    return {"0": "open", "1": "closed", "3": "abnormal"}


def _valve_code(key: object) -> int:
    """A valve_states key: the valve bits' value, decimal ("3") or hex ("0x3"); TOML keys are text."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    text = str(key).strip()
    try:
        return int(text[2:], 16) if text[:2].lower() == "0x" else int(text, 10)
    except ValueError:
        raise ValueError(
            f"valve_states key {key!r} is not a valve code: expected the valve bits' value, "
            'decimal ("3") or hex ("0x3")'
        ) from None


class StatusBits(BaseModel):
    """A firmware's own status-bit layout (ST0 | ST1 << 8)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    valve_shift: int = Field(default=0, ge=0, le=14)
    valve_mask: int = Field(default=3, ge=1, le=3)
    valve_states: dict[str, ValveState] = Field(
        default_factory=_standard_valve_states,
        description=(
            "valve bit values and what they mean (open, closed, abnormal); a key is the value of the "
            'valve bits, decimal or hex ("3", "0x3"), within valve_mask'
        ),
    )
    battery_low_bit: int = Field(default=2, ge=0, le=15)

    @field_validator("valve_states", mode="before")
    @classmethod
    def _valve_codes(cls, v: object, info: ValidationInfo) -> object:
        """Keys checked here, once, as codes within the mask (written back in decimal), not on
        every poll. (The standard states, when not given, are not checked against a narrower mask:
        a code that cannot be read there does no harm.)"""
        if not isinstance(v, dict):
            return v  # pydantic names the type error
        mask = info.data.get("valve_mask")  # absent when valve_mask itself is invalid
        out: dict[str, object] = {}
        seen: dict[int, object] = {}
        for key, state in v.items():
            code = _valve_code(key)
            if isinstance(mask, int) and (code < 0 or code & ~mask):
                raise ValueError(
                    f"valve_states key {key!r} can never be read: the valve bits are masked with "
                    f"valve_mask {mask}, so a code uses only those bits"
                )
            if code in seen:
                raise ValueError(f"valve_states keys {seen[code]!r} and {key!r} are one valve code, {code}")
            seen[code] = key
            out[str(code)] = state
        return out

    def to_map(self) -> StatusMap:
        return StatusMap(
            self.valve_shift,
            self.valve_mask,
            {int(k): v for k, v in self.valve_states.items()},
            self.battery_low_bit,
        )


class Cjt188Device(DeviceConfig):
    """One water, gas or heat meter: 14-digit address, meter type, DI byte order, status layout."""

    address: str = Field(pattern=r"^[0-9]{14}$", description="14 BCD digits as printed on the meter")
    meter_type: int = Field(default=0x10, ge=0, le=0xFF, description="T byte: 10 cold water, 20 heat, 30 gas")
    di_order: DiOrder = DiOrder.HIGH_FIRST
    status_map: str = "standard"
    status_bits: StatusBits | None = None
    preamble: bool = True
    points: dict[str, Cjt188Point] = Field(default_factory=dict)  # type: ignore[assignment]

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, v: object) -> object:
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:014d}"
        if isinstance(v, str) and (problem := meter_address_problem(v, digits=14, protocol="CJ/T 188")):
            raise in_field_words(problem)  # not "string should match pattern '^[0-9]{14}$'"
        return v

    @field_validator("meter_type", mode="before")
    @classmethod
    def _meter_type(cls, v: object) -> object:
        # installers copy the T byte as printed: "10" means 0x10
        if isinstance(v, str):
            try:
                return int(v.strip().removeprefix("0x").removeprefix("0X"), 16)
            except ValueError:
                raise ValueError(
                    f"meter type is a hex byte such as 10 (cold water), 20 (heat), 30 (gas), got {v!r}"
                ) from None
        return v

    @field_validator("status_map")
    @classmethod
    def _status_map(cls, v: str) -> str:
        if v not in STATUS_MAPS:
            raise ValueError(f"unknown status map {v!r} (known: {', '.join(STATUS_MAPS)})")
        return v

    def status(self) -> StatusMap:
        return self.status_bits.to_map() if self.status_bits else STATUS_MAPS[self.status_map]
