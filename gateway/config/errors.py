"""Turn pydantic validation errors into ConfigIssues with key paths an installer can find."""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.api import ConfigIssue


def key_path(loc: Iterable[str | int], prefix: str = "") -> str:
    """('devices', 3, 'points', 'flow', 'scale') -> 'devices[3].points.flow.scale'."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def issues_from(
    err: ValidationError, file: str, prefix: str = "", model: type[BaseModel] | None = None
) -> list[ConfigIssue]:
    """One ConfigIssue per pydantic error, with what was expected and what was found."""
    out: list[ConfigIssue] = []
    for e in err.errors(include_url=False):
        loc = [p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        path = key_path(loc, prefix)
        kind = e["type"]
        if kind == "extra_forbidden":
            name = str(loc[-1]) if loc else "?"
            allowed = _allowed_keys(model, loc[:-1])
            hint = ""
            if allowed:
                close = difflib.get_close_matches(name, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(allowed)})"
            msg = f"unknown key{hint}"
        elif kind == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            msg = f"expected: {msg[0].lower()}{msg[1:]}" if msg else "invalid"
            if "input" in e and not isinstance(e["input"], dict | list):
                msg += f"; found {_short(e['input'])}"
        out.append(ConfigIssue(file, path, msg))
    return out


def _allowed_keys(model: type[BaseModel] | None, loc: Sequence[str | int]) -> list[str]:
    """Field names of the (nested) model at `loc`, for 'did you mean' hints."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _model_of(field.annotation)
    if current is None or not hasattr(current, "model_fields"):
        return []
    return sorted(current.model_fields)


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


_ENTRY = re.compile(r"^(buses|devices)\[(\d+)\]")


def name_entries(issues: list[ConfigIssue], raw: dict[str, Any]) -> list[ConfigIssue]:
    """Issues whose path starts at a `[[buses]]` or `[[devices]]` entry with an id also name that
    id for people: `devices[4] (id 'wm-3').points.flow.scale`. `path` itself stays the key path."""
    out: list[ConfigIssue] = []
    for issue in issues:
        m = _ENTRY.match(issue.path)
        entries = raw.get(m.group(1)) if m else None
        entry_id = None
        if m and isinstance(entries, list) and int(m.group(2)) < len(entries):
            entry = entries[int(m.group(2))]
            entry_id = entry.get("id") if isinstance(entry, dict) else None
        if m and isinstance(entry_id, str) and entry_id and not issue.shown:
            end = m.end()
            shown = f"{issue.path[:end]} (id {_short(entry_id)}){issue.path[end:]}"
            issue = dataclasses.replace(issue, shown=shown)
        out.append(issue)
    return out
