"""Turn pydantic validation errors into ConfigIssues with key paths an installer can find."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from citynerve.gateway.api import IN_FIELD_WORDS, ConfigIssue
from citynerve.gateway.logs import is_secret_key, redact_urls


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
    text = redact_urls(repr(value))  # before it is cut: a cut could leave a password without its @
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
                hint = did_you_mean(name, allowed) or f" (allowed: {', '.join(allowed)})"
            msg = f"unknown key{hint}"
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == IN_FIELD_WORDS:
            msg = e["msg"]  # it says what is expected and what was found
        else:
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
            msg = f"expected: {msg[0].lower()}{msg[1:]}" if msg else "invalid"
            secret = any(isinstance(p, str) and is_secret_key(p) for p in loc)
            if "input" in e and not isinstance(e["input"], dict | list) and not secret:
                msg += f"; found {_short(e['input'])}"
        out.append(ConfigIssue(file, path, redact_urls(msg)))
    return out


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` naming the choice closest to a mistyped `name`, or "" when none is close."""
    import difflib  # only for a mistake: not in every running gateway's memory

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


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


_ENTRY = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)\[(\d+)\]")


def with_subjects(issues: list[ConfigIssue], raw: dict[str, Any], file: str) -> list[ConfigIssue]:
    """Name the entry each issue is in by its id (`devices[4] (id 'meter-3').points.x`), when the
    path starts in an array of tables whose entry has a string id."""
    out = []
    for issue in issues:
        m = _ENTRY.match(issue.path)
        entry: Any = None
        if m and issue.file == file and not issue.subject:
            table: Any = raw
            for part in m.group(1).split("."):
                table = table.get(part) if isinstance(table, dict) else None
            index = int(m.group(2))
            if isinstance(table, list) and index < len(table) and isinstance(table[index], dict):
                entry = table[index].get("id")
        if isinstance(entry, str) and entry:
            issue = dataclasses.replace(issue, subject=entry[:64])
        out.append(issue)
    return out
