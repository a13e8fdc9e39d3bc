"""Versioned JSON Schemas (draft 2020-12) of every JSON v1 message, shipped as package data."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from citynerve.gateway import shipped

NAMES = ("telemetry", "events", "status", "inventory", "command", "command_result", "ack")


def schema_path(name: str, version: int = 1) -> Path:
    """Path of `schemas/v<version>/<name>.json`."""
    return shipped.schemas(version) / f"{name}.json"


@cache
def load_schema(name: str, version: int = 1) -> dict[str, Any]:
    """The parsed schema; raises KeyError for a message kind the contract does not have."""
    if name not in NAMES:
        raise KeyError(name)
    return json.loads(schema_path(name, version).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
