"""The gateway's uplinks: one per destination ([[upstream]]), with the remote actions the platform
may call (moved from runtime.py; `gw` is the running Gateway)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from citynerve.gateway.store import AsyncOutbox

if TYPE_CHECKING:
    from citynerve.gateway.runtime import Gateway
    from citynerve.gateway.uplink import Uplink
    from citynerve.gateway.uplink.sparkplug import SparkplugUplink

__all__ = ["make_uplinks", "remote_actions_of"]


async def make_uplinks(gw: Gateway, outbox: AsyncOutbox) -> list[Uplink | SparkplugUplink]:
    """One uplink per destination, registered with the outbox first (a row leaves it once every
    destination that wants it has acknowledged it)."""
    configs = gw.config.destinations or ((gw.config.upstream,) if gw.config.upstream is not None else ())
    if not configs:
        return []
    from citynerve.gateway.uplink import Uplink
    from citynerve.gateway.uplink.destinations import register_destinations

    await register_destinations(outbox, configs)
    actions = remote_actions_of(gw)
    inbound: dict[str, Any] = {}
    if gw.config.update is not None:  # software updates from the platform (docs/fleet.md)
        if gw.remote_update is None:
            from citynerve.gateway.release.remote import RemoteUpdate

            gw.remote_update = RemoteUpdate(
                gw.config.update,
                config_path=gw.config.source,
                gateway_id=gw.config.gateway.id,
                topic_base=f"{configs[0].topic_prefix}/{gw.config.gateway.id}",
                events=gw._event,
                outbox=Path(gw.config.store.path),
            )
        actions.update(gw.remote_update.actions())
        inbound[gw.remote_update.chunk_filter] = gw.remote_update.on_chunk
    creds = gw.credentials  # keys and certificates of the first destination
    gw.uplinks = []
    for i, c in enumerate(configs):
        if c.encoding == "sparkplug-b":  # a Sparkplug B host application (docs/sparkplug.md)
            from citynerve.gateway.uplink.sparkplug import SparkplugUplink

            gw.uplinks.append(
                SparkplugUplink(
                    c,
                    gateway_id=gw.config.gateway.id,
                    outbox=outbox,
                    devices=gw._devices,
                    state_dir=Path(gw.config.store.path).parent,
                )
            )
            continue
        gw.uplinks.append(
            Uplink(
                creds.tls.effective(c) if creds is not None and i == 0 else c,
                gateway_id=gw.config.gateway.id,
                outbox=outbox,
                inventory=gw.inventory_devices,
                commands=gw,
                actions=actions,
                inbound=inbound if i == 0 else None,  # update chunks come from the first destination
                status=gw.brief_status,
                restamp=gw.clock_sync.restamp,
            )
        )
    # Commands, results and the status message travel on the first json-v1 destination.
    gw.uplink = next((u for u in gw.uplinks if isinstance(u, Uplink)), None)
    if creds is not None and gw.uplink is not None:
        creds.attach(gw.uplink)
    return gw.uplinks


def remote_actions_of(gw: Gateway) -> dict[str, Any]:
    from citynerve.gateway.fleet import remote_actions
    from citynerve.gateway.fleet_diag import diag_actions

    assert gw.operator is not None
    actions = remote_actions(
        operator=gw.operator, gateway=gw, ring=gw.log_ring, level=gw.log_level, host=gw.host
    )
    actions.update(
        diag_actions(
            config_source=gw.config.source,
            devices=lambda: gw._devices,
            protocol_of=lambda bus: next((b.protocol for b in gw.config.buses if b.id == bus), None),
            owner_of=gw.owners.get,
        )
    )
    if gw.credentials is not None:
        actions.update(gw.credentials.remote_actions())
    if gw.remote_config is not None:
        actions.update(gw.remote_config.actions())
    return actions
