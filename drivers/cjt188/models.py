"""Config models of the CJ/T 188 driver."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citynerve.drivers.cjt188.codec import DiOrder
from citynerve.drivers.cjt188.readings import STATUS_MAPS, StatusMap
from citynerve.gateway.api import DeviceConfig, PointConfig

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


class StatusBits(BaseModel):
    """A firmware's own status-bit layout (ST0 | ST1 << 8)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    valve_shift: int = Field(default=0, ge=0, le=14)
    valve_mask: int = Field(default=3, ge=1, le=3)
    valve_states: dict[str, ValveState] = Field(default_factory=_standard_valve_states)
    battery_low_bit: int = Field(default=2, ge=0, le=15)

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
