"""The site's time zone (`[gateway] tz`) as the default of every `tz` in `[rules]`.

Rules of the day (a resident not up by 08:30, the electricity night window), quiet-hour schedules
and households each have a `tz`, and packs a `tz` parameter, defaulting to Asia/Shanghai. A site
elsewhere that set `[gateway] tz` and missed one of them would judge that rule in another zone's
hours, silently. So the `tz` a table or pack does not set is the site's; one it sets stays.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from citynerve.gateway.rules.kinds import RuleConfig
from citynerve.gateway.rules.packs import PACKS_DIR, load_pack

ZONED_TABLES = ("schedules", "households")  # each entry has a `tz`


def _zoned_kinds() -> frozenset[str]:
    """The rule kinds with a `tz` key."""
    union = typing.get_args(RuleConfig)[0]
    kinds: set[str] = set()
    for model in typing.get_args(union):
        if "tz" in model.model_fields:
            kinds.update(typing.get_args(model.model_fields["kind"].annotation))
    return frozenset(kinds)


ZONED_KINDS = _zoned_kinds()


def _pack_has_tz(ref: dict[str, Any]) -> bool:
    path = Path(str(ref["path"])) if ref.get("path") else PACKS_DIR / f"{ref.get('name')}.toml"
    try:
        return "tz" in load_pack(path).params
    except (ValueError, OSError):
        return False  # validating the pack reference says what is wrong with it


def with_site_zone(rules: Any, tz: str) -> Any:
    """A copy of the raw `[rules]` table with `tz` set to the site's where it is not given (left as
    it is when it is not a table: validation reports that)."""
    if not isinstance(rules, dict):
        return rules
    out = dict(rules)
    for key in ZONED_TABLES:
        if isinstance(out.get(key), list):
            out[key] = [{"tz": tz, **e} if isinstance(e, dict) else e for e in out[key]]
    if isinstance(out.get("rules"), list):
        zoned = [isinstance(r, dict) and r.get("kind") in ZONED_KINDS for r in out["rules"]]
        out["rules"] = [{"tz": tz, **r} if z else r for r, z in zip(out["rules"], zoned, strict=True)]
    if isinstance(out.get("packs"), list):
        packs = []
        for ref in out["packs"]:
            params = ref.get("params", {}) if isinstance(ref, dict) else None
            if isinstance(params, dict) and "tz" not in params and _pack_has_tz(ref):
                ref = {**ref, "params": {**params, "tz": tz}}
            packs.append(ref)
        out["packs"] = packs
    return out
