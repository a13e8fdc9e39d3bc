"""Checks across the `[[upstream]]` destinations: each needs its own id, and two enabled ones on one
broker need their own MQTT client ids. A broker keeps one session per client id: the second
connect takes the first one's session over, that one reconnects and takes it back, for ever (the
Sparkplug host saw NBIRTH/NDEATH over and over, the other destination a status flapping), and
`config check` said the file was valid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from citynerve.gateway.uplink.config import UpstreamConfig


def destination_issues(
    destinations: Sequence[tuple[int, UpstreamConfig]], gateway_id: str | None
) -> list[tuple[str, str]]:
    """(key path, message) for each destination whose id, or effective client id on a broker it
    shares with an enabled destination before it, is already taken. `destinations`: each with its
    index in `[[upstream]]`; `gateway_id` None when `[gateway]` is not valid (then only explicit
    client ids are compared: the default ones derive from it)."""
    issues: list[tuple[str, str]] = []
    seen_ids: set[str] = set()
    for i, d in destinations:
        if d.id in seen_ids:
            issues.append((f"upstream[{i}].id", f"destination id {d.id!r} is used twice"))
        seen_ids.add(d.id)
    enabled: list[tuple[UpstreamConfig, str, set[tuple[str, int]]]] = []
    for i, d in destinations:
        if not d.enabled or (d.client_id is None and gateway_id is None):
            continue
        client_id = d.client_id or d.effective_client_id(gateway_id or "")
        brokers = {(b.host.lower(), b.port) for b in d.broker_urls()}
        for other, other_client_id, other_brokers in enabled:
            shared = brokers & other_brokers
            if client_id == other_client_id and shared:
                host, port = min(shared)
                broker = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                issues.append(
                    (
                        f"upstream[{i}].client_id",
                        f"destinations {other.id!r} and {d.id!r} both connect to {broker} as "
                        f"{client_id!r}: each connect would take the other's session over; give "
                        "one of them its own client_id",
                    )
                )
                break
        enabled.append((d, client_id, brokers))
    return issues


__all__ = ["destination_issues"]
