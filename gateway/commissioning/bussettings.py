"""Safe edit of one bus's line settings in the config file (the fix a probe found).

Works on the text of the `[[buses]]` block with that id, so comments and layout survive: a key that
is there gets its value replaced on its line, a missing one is added after the block's `id` line.
The result is validated and written like every other edit (configfile: atomic, with a backup).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from citynerve.gateway.api import read_text
from citynerve.gateway.commissioning.configfile import (
    _HEADER,
    ConfigEditError,
    _value,
    cannot_write,
    validate_text,
    write_atomically,
)
from citynerve.gateway.config import GatewayConfig

_SETTING_KEYS = ("baudrate", "parity", "stopbits", "bytesize")


def _bus_block(lines: list[str], bus_id: str) -> tuple[int, int] | None:
    start: int | None = None
    for i, line in enumerate([*lines, "[end]"]):
        header = _HEADER.match(line)  # the config editor's: `[[buses]]   # riser A` is a header too
        if not header:
            continue
        if start is not None:
            try:
                parsed = tomllib.loads("".join(lines[start:i]))
            except tomllib.TOMLDecodeError:
                parsed = {}
            items = parsed.get("buses") or [{}]
            if items[0].get("id") == bus_id:
                return start, i
            start = None
        if line.lstrip().startswith("[[") and header.group(1).replace(" ", "") == "buses":
            start = i
    return None


def set_bus_settings(text: str, bus_id: str, settings: dict[str, Any], *, path: Path) -> str:
    """`text` with the bus's line settings changed (only baudrate, parity, stopbits, bytesize)."""
    unknown = set(settings) - set(_SETTING_KEYS)
    if unknown:
        raise ConfigEditError(path, f"not a line setting: {', '.join(sorted(unknown))}")
    lines = text.splitlines(keepends=True)
    block = _bus_block(lines, bus_id)
    if block is None:
        raise ConfigEditError(path, f"no [[buses]] entry with id {bus_id!r}")
    start, end = block
    body = lines[start:end]
    for key, value in settings.items():
        pattern = re.compile(rf"^(\s*){re.escape(key)}\s*=\s*[^#\n]*?(\s*#.*)?(\r?\n)?$")
        for i, line in enumerate(body):
            m = pattern.match(line)
            if m:
                body[i] = f"{m.group(1)}{key} = {_value(value)}{m.group(2) or ''}{m.group(3) or ''}"
                break
        else:
            at = next((i for i, line in enumerate(body) if re.match(r"^\s*id\s*=", line)), 0)
            body.insert(at + 1, f"{key} = {_value(value)}\n")
    return "".join(lines[:start] + body + lines[end:])


def save_bus_settings(path: Path, bus_id: str, settings: dict[str, Any]) -> tuple[GatewayConfig, Path | None]:
    """Change the bus's settings in the config file: validated first, atomically, with a backup."""
    try:
        text = read_text(path)
    except OSError as err:
        raise ConfigEditError(path, f"cannot read: {err}") from err
    except ValueError as err:  # not UTF-8: where, and what to do
        raise ConfigEditError(path, str(err)) from err
    new = set_bus_settings(text, bus_id, settings, path=path)
    try:
        cfg = validate_text(path, new)
        mode = path.stat().st_mode & 0o777
        return cfg, write_atomically(path, new, mode=mode)
    except OSError as err:
        raise cannot_write(path, err) from err
