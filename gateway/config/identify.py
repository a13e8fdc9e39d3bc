"""A device profile's `[identify]` table: how commissioning recognises the device (used by
gateway/commissioning/identify.py; validated with the profile, so `config check` names mistakes)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    # NaN and infinity refused: a NaN range admits no value and an infinite one every value.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class RegisterCheck(_Strict):
    """A Modbus register with an expected value or range."""

    table: Literal["holding", "input"] = Field(default="holding", description="Modbus table")
    address: int = Field(ge=0, le=65535, description="0-based register address")
    type: Literal["uint16", "int16", "uint32", "int32", "float32"] = Field(
        default="uint16", description="how the register(s) decode"
    )
    word_order: Literal["big", "little"] = Field(default="big", description="register order")
    byte_order: Literal["big", "little"] = Field(default="big", description="byte order in a register")
    equals: float | None = Field(default=None, description="the value it must hold")
    equals_unit: bool = Field(default=False, description="the register holds the device's unit id")
    min: float | None = Field(default=None, description="lowest value that fits")
    max: float | None = Field(default=None, description="highest value that fits")
    what: str = Field(default="", max_length=80, description="what the register is, for the evidence")

    @model_validator(mode="after")
    def _fits(self) -> RegisterCheck:
        width = 2 if self.type in ("uint32", "int32", "float32") else 1
        if self.address + width - 1 > 65535:
            raise ValueError(
                f"address {self.address} + {width} registers ({self.type}) runs past the last address 65535"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min <= max; found min {self.min:g}, max {self.max:g}")
        return self


class DiCheck(_Strict):
    """A DL/T 645 data identifier that must answer with data, or with an error reply."""

    di: str = Field(pattern=r"^[0-9A-Fa-f]{4}([0-9A-Fa-f]{4})?$", description="data identifier, hex")
    reply: Literal["data", "error"] = Field(description="data, or an error reply (no such data)")
    what: str = Field(default="", max_length=80, description="what the DI is, for the evidence")


class IdentifySpec(_Strict):
    """A profile's `[identify]` table."""

    device_id: dict[str, str] = Field(
        default_factory=dict,
        max_length=7,
        description="Modbus FC 43 objects (vendor, product_code, model_name...) and text they contain",
    )
    registers: tuple[RegisterCheck, ...] = Field(
        default=(), max_length=8, description="Modbus registers with expected values or ranges"
    )
    dis: tuple[DiCheck, ...] = Field(default=(), max_length=8, description="DL/T 645 DIs asked")
    plausible: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        max_length=16,
        description="point name -> [min, max] its first value must fall in, read as the profile reads it",
    )

    @field_validator("plausible")
    @classmethod
    def _ranges(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (lo, hi) in v.items():
            if lo > hi:
                raise ValueError(f"{name}: a range [min, max] with min <= max; found [{lo:g}, {hi:g}]")
        return v
