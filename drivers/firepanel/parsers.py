"""Panel print-stream parsers: one plugin per panel model, found by name in `PARSERS`.

A parser turns one decoded text line of a fire alarm control panel's printer/CRT port into a
`PanelRecord` (or None: not a record this model knows). Parsers are pure and hold no I/O, so a new
panel model is a new class registered with `@register_parser("name")` and tested from captured text.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from citynerve.gateway.api import EventState, Severity


class RecordKind(enum.StrEnum):
    """What the panel reported, in the gateway's event kinds."""

    FIRE = "fire"
    SMOKE = "smoke"
    PANEL_FAULT = "panel_fault"
    MAINS_FAULT = "mains_fault"
    BATTERY_FAULT = "battery_fault"
    SUPERVISORY = "supervisory"
    LINKAGE_START = "linkage_start"
    LINKAGE_FEEDBACK = "linkage_feedback"
    DISABLED = "disabled"
    RESET = "panel_reset"
    SILENCED = "silenced"
    SELF_TEST = "self_test"


@dataclass(frozen=True, slots=True)
class PanelRecord:
    """One parsed panel record. `state` CLEARED ends an earlier RAISED record of the same kind and
    point (loop, device); `RESET` clears everything the panel had raised."""

    kind: RecordKind
    state: EventState
    severity: Severity
    event_text: str  # the panel's own words, e.g. 首次火警
    panel_time: str | None = None  # ISO 8601, the panel's clock (often wrong: kept as an attribute)
    loop: int | None = None
    device: int | None = None
    device_type: str = ""
    location: str = ""
    raw: str = ""

    @property
    def point_key(self) -> str:
        if self.loop is None and self.device is None:
            return "panel"
        return f"{self.loop or 0:03d}-{self.device or 0:03d}"


class PanelParser(ABC):
    """Parses one panel model's print stream, line by line."""

    #: registry name, e.g. "gst"
    model: str = ""

    def __init__(self, *, date_order: str = "ymd") -> None:
        self.date_order = date_order

    @abstractmethod
    def parse_line(self, line: str) -> PanelRecord | None:
        """The record on this line, or None for a line this model does not know (kept as raw)."""


PARSERS: dict[str, type[PanelParser]] = {}


def register_parser(name: str) -> Callable[[type[PanelParser]], type[PanelParser]]:
    """Class decorator: make a parser available to devices with `panel_model = name`."""

    def add(cls: type[PanelParser]) -> type[PanelParser]:
        cls.model = name
        PARSERS[name] = cls
        return cls

    return add


def parser_for(model: str, **options: str) -> PanelParser:
    """A parser instance by model name. Raises KeyError naming the known models."""
    from citynerve.drivers.firepanel import gst  # noqa: F401  (registers the shipped parsers)

    try:
        cls = PARSERS[model]
    except KeyError:
        raise KeyError(f"unknown panel model {model!r} (known: {', '.join(sorted(PARSERS))})") from None
    return cls(**options)
