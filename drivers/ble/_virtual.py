"""Named in-process virtual links, so a config's `transport = "virtual:<name>"` can reach a link
that a simulator (hil/sim/ble) created in the same process. Holds objects only: no bumble import."""

from __future__ import annotations

from typing import Any

_LINKS: dict[str, Any] = {}


def register_virtual_link(name: str, link: Any) -> None:
    """Make `link` (a bumble LocalLink) reachable as transport `virtual:<name>`."""
    _LINKS[name] = link


def unregister_virtual_link(name: str) -> None:
    """Forget a link (tests call this in teardown)."""
    _LINKS.pop(name, None)


def virtual_link(name: str) -> Any | None:
    """The link registered under `name`, or None."""
    return _LINKS.get(name)
