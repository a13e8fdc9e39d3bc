"""Rule packs: the shipped (config/rules/<name>.toml) or local pack files, their `$param`
substitution and their expansion into rules (moved from rules/config.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from citynerve.gateway import shipped
from citynerve.gateway.api import ConfigError
from citynerve.gateway.rules.kinds import _RULES, RULE_ID, RuleConfig, Selector, _Model

PACKS_DIR = shipped.rule_packs()
"""Where shipped packs live (config/rules/<name>.toml in the repo, package data when installed)."""


@dataclass(frozen=True, slots=True)
class RulePack:
    """A shipped rule pack: rule tables with `$param` placeholders, parameter defaults, its source.

    Compared by value: two loads of the same file are equal (a reload with packs is no change), a
    file whose content changed on disk since (an update of a shipped pack) is not."""

    id: str
    description: str
    source: str
    params: dict[str, Any]
    rules: list[dict[str, Any]]
    classes: tuple[str, ...] = ()  # the device classes (profiles' `device_class`) the pack is written for
    per_household: str = ""  # what the installer sets per household first: `init` leaves it off

    def rule_classes(self, rule: Mapping[str, Any]) -> tuple[str, ...]:
        """The device classes one of the pack's rules is for (`for_classes`, else the pack's)."""
        return tuple(rule.get("for_classes") or self.classes)

    def expand(
        self,
        params: Mapping[str, Any],
        points: Mapping[str, str],
        select: Selector,
        disable: Sequence[str] = (),
    ) -> tuple[RuleConfig, ...]:
        """Rules with parameters substituted, ids qualified and the pack's selector applied."""
        values = {**self.params, **params}
        local = {r["id"] for r in self.rules}
        raw: list[dict[str, Any]] = []
        for r in self.rules:
            if r["id"] in disable:
                continue
            d = {k: _subst(v, values) for k, v in r.items() if k not in _PACK_ONLY}
            d["id"] = f"{self.id}.{r['id']}"
            if "point" in d and d["point"] in points:
                d["point"] = points[d["point"]]
            for key in ("of", "confirmed_by", "alone_unless", "relays"):
                if key in d:
                    d[key] = [f"{self.id}.{c}" if c in local else c for c in d[key]]
            if "select" not in d:
                d["select"] = select.model_dump()
            raw.append(d)
        try:
            return _RULES.validate_python(raw)
        except ValidationError as err:
            # Name the pack's rule, not its index: "pack manhole: rule cover_tilt: threshold.above: ..."
            parts = []
            for e in err.errors():
                loc = list(e["loc"])
                local_id = raw[loc[0]]["id"].split(".", 1)[1] if loc and isinstance(loc[0], int) else ""
                where = f"rule {local_id}"
                rest = ".".join(str(p) for p in loc[1:])
                parts.append(f"{where}: {rest}: {e['msg']}" if rest else f"{where}: {e['msg']}")
            raise ValueError(f"pack {self.id}: {'; '.join(parts)}") from err


def load_pack(path: Path) -> RulePack:
    """Read a pack file. Raises ValueError (inside validation this becomes a pydantic error)."""
    from citynerve.gateway.config.tomlfile import read_toml

    if not path.exists():
        shipped = sorted(p.stem for p in PACKS_DIR.glob("*.toml"))
        raise ValueError(f"no rule pack at {path}; shipped packs: {shipped}")
    try:
        data = read_toml(path)  # bounded: size first, nesting cannot escape as a RecursionError
    except ConfigError as err:
        raise ValueError(f"cannot read rule pack {path}: {err.issues[0].message}") from err
    try:
        header = _PackHeader.model_validate({k: v for k, v in data.items() if k not in ("params", "rules")})
    except ValidationError as err:
        raise ValueError(f"rule pack {path}: {_flatten(err)}") from err
    if header.id != path.stem:
        raise ValueError(f"rule pack {path}: id {header.id!r} must equal the file stem {path.stem!r}")
    rules = data.get("rules", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) and "id" in r for r in rules):
        raise ValueError(f"rule pack {path}: `rules` must be an array of tables each with an `id`")
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise ValueError(f"rule pack {path}: `params` must be a table")
    for r in rules:
        unknown = set(r.get("for_classes") or ()) - set(header.classes)
        if unknown:
            raise ValueError(
                f"rule pack {path}: rule {r['id']}: for_classes {sorted(unknown)} not in `classes`"
            )
    return RulePack(
        header.id, header.description, header.source, params, rules, header.classes, header.per_household
    )


class _PackHeader(_Model):
    id: str = Field(pattern=RULE_ID)
    description: str = Field(min_length=1)
    source: str = Field(min_length=1, description="where the rules come from")
    classes: tuple[str, ...] = Field(default=(), description="device classes the pack is written for")
    per_household: str = Field(
        default="",
        description="what must be set per household or resident before the pack is on "
        "(`citynerve init` writes such a pack commented out, with this line)",
    )


# Keys of a pack's rule table that describe how the pack fits profiles, not the rule itself:
# `for_classes` (the classes this rule is for) and `optional` (a point only some models have).
_PACK_ONLY = ("for_classes", "optional")


_PARAM = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_INLINE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::(h|min))?\}")
_UNIT_S = {"h": 3600, "min": 60}


def _shown(value: Any, unit: str | None = None) -> str:
    """A parameter inside a message: 90.0 -> "90", 235.4 -> "235.4", [0, 6] -> "0-6";
    `${window_s:h}` shows seconds as hours (43200 -> "12"), `:min` as minutes."""
    if unit and isinstance(value, int | float) and not isinstance(value, bool):
        value = round(value / _UNIT_S[unit], 2)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "-".join(_shown(v) for v in value)
    return str(value)


def _param(name: str, values: Mapping[str, Any]) -> Any:
    if name not in values:
        raise ValueError(f"parameter ${name} is not defined in the pack's [params]")
    return values[name]


def _subst(v: Any, values: Mapping[str, Any]) -> Any:
    """`"$name"` becomes the parameter's value; `${name}` inside a text (a message) its text."""
    if isinstance(v, str):
        m = _PARAM.match(v)
        if m:
            return _param(m.group(1), values)
        return _INLINE.sub(lambda m: _shown(_param(m.group(1), values), m.group(2)), v)
    if isinstance(v, list):
        return [_subst(x, values) for x in v]
    if isinstance(v, dict):
        return {k: _subst(x, values) for k, x in v.items()}
    return v


def _flatten(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
