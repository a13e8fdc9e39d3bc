"""Identification, not guessing: which profile fits a device that answered, with the evidence.

A profile's `[identify]` section says how to recognise its device:
- `device_id`: Modbus device identification (FC 43 / MEI 14) objects, e.g. { vendor = "Eastron" }
  (case-insensitive substring); only where the device supports it;
- `registers`: Modbus registers with an expected value (`equals`, `equals_unit` for a register that
  holds the unit id) or range (`min`, `max`);
- `dis`: DL/T 645 data identifiers the meter must answer with data, or with an error reply (a
  single-phase meter has no phase B);
- `plausible`: first values of the profile's own points, read as the profile reads them, that must
  fall in a range (e.g. voltage_a = [180, 260]).
Facts from the reply count too: the DL/T 645 version the meter answered, the CJ/T 188 meter type
and DI byte order. Each check passed or failed is one line of evidence with a weight; the profile's
score is their sum. A device is assigned only when the best score is confident and clearly ahead
of the next (`decide`); otherwise it stays unassigned with its candidates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from citynerve.gateway.api import DeviceExceptionError, GatewayError
from citynerve.gateway.config.identify import IdentifySpec

CONFIDENT = 6  # the best score must reach this...
MARGIN = 4  # ...and be this far ahead of the next candidate

Run = Callable[[str, Mapping[str, Any]], Awaitable[dict[str, Any]]]


def spec_of(raw: Any) -> IdentifySpec:
    """The profile's identify table; raises ValueError naming the problem."""
    if isinstance(raw, IdentifySpec):
        return raw
    try:
        return IdentifySpec.model_validate(raw or {})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"identify.{where}: {first['msg']}") from err


@dataclass(frozen=True, slots=True)
class Evidence:
    check: str  # what was asked, e.g. "register holding 2000 == unit id"
    passed: bool | None  # None: no answer either way (device does not support it)
    weight: int
    found: str = ""  # what the device said

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "passed": self.passed, "weight": self.weight, "found": self.found}


@dataclass(slots=True)
class Verdict:
    """How well one profile fits one device."""

    profile: str
    evidence: list[Evidence] = field(default_factory=list)
    first_values: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> int:
        return sum(e.weight for e in self.evidence)

    def add(self, check: str, passed: bool | None, found: str = "", *, yes: int, no: int) -> None:
        self.evidence.append(
            Evidence(check, passed, yes if passed else (no if passed is False else 0), found)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "score": self.score,
            "evidence": [e.to_dict() for e in self.evidence],
            "first_values": self.first_values,
        }


def decide(verdicts: list[Verdict]) -> tuple[Verdict | None, str]:
    """The profile to assign, or None with the reason (no evidence, too weak, a tie)."""
    if not verdicts:
        return None, "no installed profile of this family"
    ranked = sorted(verdicts, key=lambda v: -v.score)
    best = ranked[0]
    if best.score < CONFIDENT:
        return (
            None,
            f"no profile fits with confidence (best {best.profile}: score {best.score} < {CONFIDENT})",
        )
    if len(ranked) > 1 and best.score - ranked[1].score < MARGIN:
        return None, (
            f"ambiguous: {best.profile} ({best.score}) and {ranked[1].profile} ({ranked[1].score}) "
            "fit about as well"
        )
    return best, f"{best.profile}: score {best.score}"


def unusable(profile_id: str, err: Exception) -> Verdict:
    """The verdict of a profile whose own values cannot be used: it fails; the others are judged."""
    v = Verdict(profile_id)
    v.add("the profile's values can be used", False, f"{type(err).__name__}: {_short(err)}", yes=0, no=-20)
    return v


# -- per family ----------------------------------------------------------------------------------


def _in(value: Any, lo: float | None, hi: float | None) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _range(lo: float | None, hi: float | None) -> str:
    return f"{'' if lo is None else lo:g}..{'' if hi is None else hi:g}".replace("..", " .. ")


async def modbus(
    run: Run, unit: int, profile: Any, spec: IdentifySpec, device_info: dict[str, str] | None
) -> Verdict:
    """Check one Modbus profile against the device at `unit`. `device_info`: the FC 43 objects, or
    None when the device does not answer FC 43."""
    v = Verdict(profile.id)
    for key, wanted in spec.device_id.items():
        if device_info is None:
            v.add(f"FC 43 {key} ~ {wanted!r}", None, "no device identification", yes=0, no=0)
            continue
        got = device_info.get(key, "")
        v.add(f"FC 43 {key} ~ {wanted!r}", wanted.lower() in got.lower(), got, yes=10, no=-3)
    for r in spec.registers:
        params: dict[str, Any] = {"unit": unit, "table": r.table, "address": r.address, "type": r.type}
        params |= {"word_order": r.word_order, "byte_order": r.byte_order}
        expect = (
            "== unit id"
            if r.equals_unit
            else f"== {r.equals:g}"
            if r.equals is not None
            else _range(r.min, r.max)
        )
        check = f"register {r.table} {r.address}{f' ({r.what})' if r.what else ''} {expect}"
        try:
            value = (await run("read", params)).get("value")
        except GatewayError as err:
            v.add(check, False, _short(err), yes=4, no=-6)
            continue
        target = float(unit) if r.equals_unit else r.equals
        ok = value == target if target is not None else _in(value, r.min, r.max)
        v.add(check, ok, repr(value), yes=4, no=-6)
    for name, (lo, hi) in spec.plausible.items():
        point = profile.raw_points.get(name)
        if not isinstance(point, Mapping):
            continue
        check = f"first value of {name} in {lo:g} .. {hi:g}"
        try:
            value = await _modbus_point(run, unit, point)
        except GatewayError as err:
            v.add(check, False, _short(err), yes=2, no=-4)
            continue
        v.first_values[name] = value
        v.add(check, _in(value, lo, hi), repr(value), yes=2, no=-4)
    return v


async def _modbus_point(run: Run, unit: int, point: Mapping[str, Any]) -> Any:
    type_ = str(point.get("type", "uint16"))
    bit = point.get("bit")
    params: dict[str, Any] = {
        "unit": unit,
        "table": point.get("table", "holding"),
        "address": int(point.get("address", 0)),
        "type": "uint16" if type_ == "bool" else type_,
        "word_order": point.get("word_order", "big"),
        "byte_order": point.get("byte_order", "big"),
    }
    if point.get("table") in ("coil", "discrete"):
        params.pop("type")
        return bool((await run("read", params))["bits"][0])
    value = (await run("read", params)).get("value")
    if type_ == "bool":
        return bool((int(value or 0) >> int(bit or 0)) & 1)
    if isinstance(value, int | float):
        return round(value * float(point.get("scale", 1.0)) + float(point.get("offset", 0.0)), 6)
    return value


async def dlt645(
    run: Run, address: str, profile: Any, spec: IdentifySpec, detail: Mapping[str, Any]
) -> Verdict:
    v = Verdict(profile.id)
    wanted = str(profile.device_defaults.get("version", "2007"))
    got = detail.get("version")
    evidence = detail.get("evidence") or {}
    v.add(
        f"answers DL/T 645-{wanted} reads with data",
        None if got is None else got == wanted,
        f"{got or 'neither version'}: {evidence}",
        yes=8,
        no=-20,
    )
    if got != wanted:
        return v  # the wrong version cannot be read at all: nothing more to ask
    for d in spec.dis:
        check = f"DI {d.di.upper()}{f' ({d.what})' if d.what else ''} answers with {d.reply}"
        try:
            await run("read-di", {"address": address, "di": d.di, "version": wanted})
            reply = "data"
        except DeviceExceptionError:
            reply = "error"
        except GatewayError as err:
            v.add(check, None, _short(err), yes=0, no=0)
            continue
        v.add(check, reply == d.reply, reply, yes=4, no=-6)
    for name, (lo, hi) in spec.plausible.items():
        point = profile.raw_points.get(name)
        if not isinstance(point, Mapping) or "di" not in point:
            continue
        check = f"first value of {name} in {lo:g} .. {hi:g}"
        try:
            value = (await run("read-di", {"address": address, "di": point["di"], "version": wanted}))[
                "value"
            ]
        except GatewayError as err:
            v.add(check, False, _short(err), yes=2, no=-4)
            continue
        v.first_values[name] = value
        v.add(check, _in(value, lo, hi), repr(value), yes=2, no=-4)
    return v


def cjt188(profile: Any, detail: Mapping[str, Any]) -> Verdict:
    """CJ/T 188: the meter type (T byte) and DI byte order come in the read-address reply."""
    v = Verdict(profile.id)
    wanted_type = profile.device_defaults.get("meter_type")
    got_type = detail.get("meter_type")
    if wanted_type is not None and got_type is not None:
        v.add(f"meter type {int(wanted_type):02X}", f"{int(wanted_type):02X}" == str(got_type).upper(),
              str(got_type), yes=8, no=-20)  # fmt: skip
    wanted_order = profile.device_defaults.get("di_order")
    got_order = detail.get("di_order")
    if wanted_order is not None and got_order is not None:
        v.add(
            f"DI byte order {wanted_order}",
            str(wanted_order) == str(got_order),
            str(got_order),
            yes=4,
            no=-20,
        )
    return v


def _short(err: Exception) -> str:
    text = str(err)
    return text if len(text) <= 100 else text[:97] + "..."
