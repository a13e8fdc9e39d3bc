"""From what answered to device entries: identify each device against every profile of its family
(identify.py), assign only a confident, unambiguous match, and list the candidates otherwise."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from citynerve.gateway.api import GatewayError
from citynerve.gateway.commissioning import identify as idf
from citynerve.gateway.commissioning.discovery import Found
from citynerve.gateway.commissioning.profiles import ProfileInfo
from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.diagbus import DiagSession

Key = tuple[str, str]  # (bus id, address as text)


def key_of(found: Found) -> Key:
    return (found.bus, str(found.address).lower())


async def identify_found(
    config: GatewayConfig, found: Sequence[Found], profiles: Sequence[ProfileInfo]
) -> dict[Key, list[idf.Verdict]]:
    """Every candidate profile's verdict for every found device (one bus session at a time).
    A bus that fails mid-way leaves its devices without verdicts (then they stay unassigned)."""
    out: dict[Key, list[idf.Verdict]] = {}
    by_bus: dict[str, list[Found]] = {}
    for f in found:
        if not f.configured:
            by_bus.setdefault(f.bus, []).append(f)
    for bus_id, items in by_bus.items():
        family = items[0].family
        candidates = [p for p in profiles if p.family == family]
        if family in ("cjt188", "bthome"):
            for f in items:
                out[key_of(f)] = [_offline_verdict(p, f) for p in candidates]
            continue
        try:
            async with DiagSession(config, bus_id) as session:
                for f in items:
                    out[key_of(f)] = await judge(session.run, f.family, f.address, candidates, f.detail)
        except GatewayError:
            continue
    return out


async def judge(
    run: idf.Run,
    family: str,
    address: Any,
    candidates: Sequence[ProfileInfo],
    detail: Mapping[str, Any],
) -> list[idf.Verdict]:
    """Every candidate profile's verdict for one device: the one scoring of discovery and of the
    hand-over report. `run` runs a diag action on the device's bus (DiagSession.run); `detail` is
    what the device said when found (DL/T 645: the version asked; CJ/T 188: the read-address reply
    with its meter type and DI order). A profile whose values cannot be used fails alone."""
    verdicts: list[idf.Verdict] = []
    if family == "modbus":
        unit = int(address)
        info: dict[str, str] | None
        try:
            info = (await run("identify", {"unit": unit})).get("objects") or {}
        except GatewayError:
            info = None  # no FC 43 on this device: no evidence either way
        for p in candidates:
            try:
                verdicts.append(await idf.modbus(run, unit, p, idf.spec_of(p.identify), info))
            except _PROFILE_FAULTS as err:
                verdicts.append(idf.unusable(p.id, err))
    elif family == "dlt645":
        for p in candidates:
            try:
                verdicts.append(await idf.dlt645(run, str(address), p, idf.spec_of(p.identify), detail))
            except _PROFILE_FAULTS as err:
                verdicts.append(idf.unusable(p.id, err))
    elif family == "cjt188":
        verdicts = [_cjt188(p, detail) for p in candidates]
    return verdicts


_PROFILE_FAULTS = (ValueError, TypeError, KeyError, ArithmeticError)
"""A profile value identification cannot use (available_profiles judges profiles first; this is the
backstop): that profile fails, every other one is still judged."""


def _offline_verdict(p: ProfileInfo, f: Found) -> idf.Verdict:
    """Families whose evidence came with the discovery reply itself."""
    if f.family == "cjt188":
        return _cjt188(p, f.detail)
    v = idf.Verdict(p.id)
    values = f.detail.get("values") or {}
    if isinstance(values, dict) and values:
        # What a node sends, by object name, against the profile's objects and point names.
        names = set(p.objects) | set(p.points)
        for name in sorted(values):
            v.add(f"sends {name}", name in names, repr(values[name]), yes=4, no=-2)
    return v


def _cjt188(p: ProfileInfo, detail: Mapping[str, Any]) -> idf.Verdict:
    try:
        return idf.cjt188(p, detail)
    except _PROFILE_FAULTS as err:
        return idf.unusable(p.id, err)


@dataclass(frozen=True, slots=True)
class Proposal:
    """A found device: the profile assigned with its evidence, or none and why, and the candidates
    (best first) an installer can choose from."""

    found: Found
    candidates: tuple[ProfileInfo, ...]
    draft: dict[str, Any]  # the [[devices]] table without its profile
    profile: str | None = None  # assigned (confident and unambiguous) or chosen by the installer
    notes: tuple[str, ...] = ()
    verdicts: tuple[idf.Verdict, ...] = ()
    reason: str = ""  # why this profile, or why none

    @property
    def entry(self) -> dict[str, Any] | None:
        """The [[devices]] table to add; None while no profile is assigned."""
        return {**self.draft, "profile": self.profile} if self.profile else None

    def with_profile(self, profile_id: str) -> Proposal:
        return Proposal(
            self.found,
            self.candidates,
            self.draft,
            profile_id,
            self.notes,
            self.verdicts,
            "chosen by the installer",
        )

    def verdict(self, profile_id: str | None) -> idf.Verdict | None:
        return next((v for v in self.verdicts if v.profile == profile_id), None)

    def to_dict(self) -> dict[str, Any]:
        ranked = sorted(self.verdicts, key=lambda v: -v.score)
        return {
            "found": self.found.to_dict(),
            "assigned": self.profile is not None,
            "profile": self.profile,
            "reason": self.reason,
            "candidates": [{"profile": v.profile, "score": v.score} for v in ranked]
            or [{"profile": c.id, "score": None} for c in self.candidates],
            "evidence": [v.to_dict() for v in ranked],
            "entry": self.entry,
            "notes": list(self.notes),
        }


def _device_id(found: Found) -> str:
    if found.family == "modbus":
        return f"{found.bus}-u{found.address}"
    prefix = {"dlt645": "em", "cjt188": "meter", "bthome": "ble"}.get(found.family, found.family)
    return f"{prefix}-{re.sub(r'[^A-Za-z0-9]', '', str(found.address)).lower()}"


def propose(
    found: Sequence[Found],
    profiles: Sequence[ProfileInfo],
    *,
    verdicts: Mapping[Key, Sequence[idf.Verdict]] | None = None,
    existing_ids: Sequence[str] = (),
    address_code: str,
) -> list[Proposal]:
    """A proposal for every found device not configured yet. The profile is assigned only when the
    identification is confident and unambiguous (identify.decide); `verdicts` come from
    `identify_found` (families whose evidence is in the discovery reply are judged here).

    `address_code` goes into each entry's location (the gateway's street code is a fair default;
    the installer refines it)."""
    taken = set(existing_ids)
    out: list[Proposal] = []
    for f in found:
        if f.configured:
            continue
        family = [p for p in profiles if p.family == f.family]
        judged = list((verdicts or {}).get(key_of(f), ()))
        if not judged and f.family in ("cjt188", "bthome"):
            judged = [_offline_verdict(p, f) for p in family]
        score = {v.profile: v.score for v in judged}
        candidates = tuple(sorted(family, key=lambda p: (-score.get(p.id, -999), p.id)))
        notes: list[str] = []
        base_id = _device_id(f)
        dev_id, n = base_id, 2
        while dev_id in taken:
            dev_id, n = f"{base_id}-{n}", n + 1
        taken.add(dev_id)
        if f.detail.get("encrypted"):
            notes.append(
                "encrypted adverts: add the node's key (key_file) before it can be read or identified"
            )
        draft: dict[str, Any] = {"id": dev_id, "bus": f.bus, "address": f.address}
        draft["location"] = {"address_code": address_code}
        if f.family == "cjt188" and f.detail.get("meter_type"):
            draft["meter_type"] = int(str(f.detail["meter_type"]), 16)
        if f.family == "cjt188" and f.detail.get("di_order"):
            draft["di_order"] = str(f.detail["di_order"])
        if not family:
            notes.append(f"no {f.family} profile installed: add one under profiles/ and run `devices add`")
            out.append(Proposal(f, (), draft, None, tuple(notes), (), "no profile of this family"))
            continue
        best, reason = idf.decide(judged) if judged else (None, "not identified (no evidence gathered)")
        if best is None:
            notes.append(f"not assigned: {reason}")
        out.append(
            Proposal(
                f, candidates, draft, best.profile if best else None, tuple(notes), tuple(judged), reason
            )
        )
    return out
