"""Config models of the DL/T 645 driver: point (a DI), device (a meter address) and extra DIs."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citynerve.drivers.dlt645.registry import DataFormat, DataItem, DataRegistry, parse_di
from citynerve.gateway.api import DeviceConfig, PointConfig, in_field_words, meter_address_problem


def _check_di(value: str) -> str:
    try:
        parse_di(value)
    except ValueError as err:
        raise ValueError(str(err)) from err
    return value.strip().upper().removeprefix("0X")


class DataItemConfig(BaseModel):
    """A DI the built-in table lacks: `[device.extra_dis.04000B01] length = 3, decimals = 0 ...`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    format: DataFormat = DataFormat.BCD
    length: int = Field(ge=1, le=64)
    decimals: int = Field(default=0, ge=0, le=8)
    signed: bool = False
    unit: str = ""

    def item(self, di: str, version: str) -> DataItem:
        return DataItem(
            parse_di(di),
            self.name or f"DI {di}",
            self.length,
            self.format,
            self.decimals,
            self.signed,
            self.unit,
            version,
        )


class Dlt645Point(PointConfig):
    """One DI of a meter. `format`/`length`/`decimals`/`signed` override the DI table's entry.
    `bit` makes the point one flag of a binary DI (status words): true when that bit is set.
    Points that share a DI are read in one transaction."""

    di: str
    format: DataFormat | None = None
    length: int | None = Field(default=None, ge=1, le=64)
    decimals: int | None = Field(default=None, ge=0, le=8)
    signed: bool | None = None
    bit: int | None = Field(default=None, ge=0, le=63)

    @field_validator("di")
    @classmethod
    def _di(cls, v: str) -> str:
        return _check_di(v)


class Dlt645Device(DeviceConfig):
    """One electricity meter: 12-digit BCD address, protocol version, DIs added for this model."""

    address: str = Field(pattern=r"^[0-9]{12}$", description="12 BCD digits as printed on the meter")
    version: Literal["2007", "1997"] = "2007"
    preamble: bool = Field(default=True, description="send FE FE FE FE before each request")
    extra_dis: dict[str, DataItemConfig] = Field(default_factory=dict)
    points: dict[str, Dlt645Point] = Field(default_factory=dict)  # type: ignore[assignment]

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, v: object) -> object:
        # TOML lets an installer write the address as a number; keep the leading zeros
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:012d}"
        if isinstance(v, str) and (problem := meter_address_problem(v, digits=12, protocol="DL/T 645")):
            raise in_field_words(problem)  # not "string should match pattern '^[0-9]{12}$'"
        return v

    @field_validator("extra_dis")
    @classmethod
    def _extra(cls, v: dict[str, DataItemConfig]) -> dict[str, DataItemConfig]:
        return {_check_di(k): item for k, item in v.items()}

    @model_validator(mode="after")
    def _points_resolve(self) -> Dlt645Device:
        # catch a DI the meter's table lacks at `config check` time, not at the first poll
        problems = []
        for name, point in self.points.items():
            try:
                resolve_item(self, point)
            except ValueError as err:
                problems.append(f"points.{name}: {err}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def resolve_item(device: Dlt645Device, point: Dlt645Point) -> DataItem:
    """The DataItem for a point: built-in table, then the device's extra DIs, then point overrides."""
    registry = DataRegistry(device.version, [c.item(k, device.version) for k, c in device.extra_dis.items()])
    di = parse_di(point.di)
    if (device.version == "2007") != (len(point.di) == 8):
        raise ValueError(
            f"DI {point.di} does not fit DL/T 645-{device.version} "
            f"({4 if device.version == '1997' else 8} hex digits)"
        )
    item = registry.get(di)
    if item is None:
        if point.length is None:
            raise ValueError(
                f"DI {point.di} is not in the DL/T 645-{device.version} table: "
                "give its length (and format, decimals)"
            )
        item = DataItem(
            di, f"DI {point.di}", point.length, DataFormat.BCD, 0, False, point.unit, device.version
        )
    overrides: dict[str, Any] = {}
    if point.format is not None:
        overrides["fmt"] = point.format
    if point.length is not None:
        overrides["length"] = point.length
    if point.decimals is not None:
        overrides["decimals"] = point.decimals
    if point.signed is not None:
        overrides["signed"] = point.signed
    item = dataclasses.replace(item, **overrides) if overrides else item
    if point.bit is not None and (item.fmt is not DataFormat.BINARY or point.bit >= item.length * 8):
        raise ValueError(
            f"bit {point.bit} needs a binary DI of more than {point.bit // 8} bytes "
            f"(DI {point.di} is {item.fmt} of {item.length} bytes)"
        )
    return item
