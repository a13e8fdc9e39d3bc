"""The gateway's uplinks: one per destination ([[upstream]]), with the remote actions the platform
may call (moved from runtime.py; `gw` is the running Gateway)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from citynerve.gateway.api import stop_task
from citynerve.gateway.bus import OFFLINE_KIND
from citynerve.gateway.store import AsyncOutbox

if TYPE_CHECKING:
    from citynerve.gateway.config import GatewayConfig
    from citynerve.gateway.runtime import Gateway
    from citynerve.gateway.uplink import Uplink
    from citynerve.gateway.uplink.commands import RemoteAction, RemoteHandler
    from citynerve.gateway.uplink.config import UpstreamConfig
    from citynerve.gateway.uplink.sparkplug import SparkplugUplink

log = logging.getLogger("citynerve.gateway")
__all__ = ["command_destination", "make_uplinks", "remote_actions_of", "restart_uplinks"]


def command_destination(config: GatewayConfig) -> UpstreamConfig | None:
    """The destination commands, results and the gateway's status travel on, and whose TLS client
    identity and command keys the credentials hold (gateway/credentials.py): the first enabled
    JSON v1 destination that takes commands, else the first enabled JSON v1 one (a disabled one
    runs nothing), else the first JSON v1 one, else the first destination (no commands then: only
    its certificates are watched). Not `[[upstream]]` number one as such: a Sparkplug destination
    put first carries no commands, nor does a JSON v1 one with commands off (the platforms that
    send them could rotate no key and start no update)."""
    configs = config.destinations or ((config.upstream,) if config.upstream is not None else ())
    json_v1 = [c for c in configs if c.encoding == "json-v1"]
    ranked = [c for c in json_v1 if c.enabled and c.commands.enabled] + [c for c in json_v1 if c.enabled]
    return next(iter(ranked), json_v1[0] if json_v1 else next(iter(configs), None))


def rule_kinds(gw: Gateway) -> dict[str, tuple[str, ...]]:
    """Per device, the event kinds its rules can raise (declared in a Sparkplug DBIRTH, so that a
    raise needs no rebirth). Kinds a driver raises (fire panel, BTHome) are not known ahead."""
    kinds: dict[str, dict[str, None]] = {}
    for inst in gw.rules.instances.values() if gw.rules is not None else ():
        kinds.setdefault(inst.device_id, {})[inst.kind] = None
    return {device: tuple(k) for device, k in kinds.items()}


async def make_uplinks(gw: Gateway, outbox: AsyncOutbox) -> list[Uplink | SparkplugUplink]:
    """One uplink per destination, registered with the outbox first (a row leaves it once every
    destination that wants it has acknowledged it)."""
    configs = gw.config.destinations or ((gw.config.upstream,) if gw.config.upstream is not None else ())
    if not configs:
        return []
    from citynerve.gateway.uplink import Uplink
    from citynerve.gateway.uplink.destinations import register_destinations

    await register_destinations(outbox, configs)
    primary = command_destination(gw.config)
    assert primary is not None
    actions = remote_actions_of(gw)
    inbound: dict[str, Any] = {}
    if gw.config.update is not None:  # software updates from the platform (docs/fleet.md)
        topic_base = f"{primary.topic_prefix}/{gw.config.gateway.id}"
        if gw.remote_update is None:
            from citynerve.gateway.release.remote import RemoteUpdate

            gw.remote_update = RemoteUpdate(
                gw.config.update,
                config_path=gw.config.source,
                gateway_id=gw.config.gateway.id,
                topic_base=topic_base,
                events=gw._event,
                outbox=Path(gw.config.store.path),
            )
        else:  # new uplinks (restart_uplinks): the chunks follow the command destination
            gw.remote_update.move_to(topic_base)
        actions.update(gw.remote_update.actions())
        inbound[gw.remote_update.chunk_filter] = gw.remote_update.on_chunk
    actions = command_destination_actions(gw, actions, primary.id)
    creds = gw.credentials  # keys and certificates of the command destination (`primary`)
    if creds is not None:
        creds.tls.destination_gone({c.id for c in configs})
    gw.uplinks = []
    for c in configs:
        if c.encoding == "sparkplug-b":  # a Sparkplug B host application (docs/sparkplug.md)
            from citynerve.gateway.uplink.sparkplug import SparkplugUplink

            gw.uplinks.append(
                SparkplugUplink(
                    c,
                    gateway_id=gw.config.gateway.id,
                    outbox=outbox,
                    devices=gw._devices,
                    state_dir=Path(gw.config.store.path).parent,
                    # Devices offline now start dead (after a restart, as their bus owners do).
                    offline=lambda: gw.alarms.devices_with(OFFLINE_KIND),
                    alarm_kinds=rule_kinds(gw),
                )
            )
            continue
        # The rotated pair on the uplink of the destination it was rotated for, wherever that is
        # in the list (a record naming none: the command destination's).
        rotated = creds is not None and (c is primary or c.id == creds.tls.destination)
        gw.uplinks.append(
            Uplink(
                creds.tls.effective(c) if creds is not None and rotated else c,
                gateway_id=gw.config.gateway.id,
                outbox=outbox,
                inventory=gw.inventory_devices,
                commands=gw,
                actions=actions,
                inbound=inbound if c is primary else None,  # update chunks come with the commands
                status=gw.brief_status,
                restamp=gw.clock_sync.restamp,
            )
        )
    # Commands, results and the status message travel on the command destination's uplink; the
    # credentials follow it (none: no JSON v1 destination, they hold no stopped uplink either).
    gw.uplink = next((u for u in gw.uplinks if isinstance(u, Uplink) and u.destination == primary.id), None)
    if creds is not None:
        creds.attach(gw.uplink)
        # The other destinations' certificates are watched for expiry too, as their uplinks use them.
        creds.others.update(
            {
                u.destination: u.config.tls
                for u in gw.uplinks
                if u.destination != primary.id
                and u.config.enabled  # a disabled destination uses no certificate
                and any(b.tls for b in u.config.broker_urls())
            }
        )
    return gw.uplinks


async def restart_uplinks(gw: Gateway) -> None:
    """New uplinks for the destinations of the reloaded config; the old ones say goodbye (the
    runtime's `restart_uplink`, for a remote config change)."""
    assert gw._tg is not None and gw.outbox is not None
    if gw._reloaded is not None:  # the [upstream] that reload left for a restart: in effect now
        up = gw._reloaded
        gw.config = replace(gw.config, upstream=up.upstream, destinations=up.destinations)
        gw.restart_pending = [s for s in gw.restart_pending if s != "upstream"]
    primary = command_destination(gw.config)
    if gw.credentials is not None and primary is not None:
        await gw.credentials.reconfigure(primary)  # as a restart builds them
    for task in gw._uplink_tasks:
        await stop_task(task, again_s=3.0)
    gw._uplink_tasks = []
    gw.uplink = None
    gw.uplinks = []
    # make_uplinks attaches the credentials to the new command uplink: once (attached twice, a
    # command-key rotation was applied twice and its old key retired before its overlap ended).
    for uplink in await make_uplinks(gw, gw.outbox):
        gw._uplink_tasks.append(gw._tg.create_task(uplink.run(), name=f"uplink.{uplink.destination}"))
    if gw.credentials is not None:
        gw.credentials.watch.check()  # expiry alarms of the certificates now in use, at once
    log.warning("uplinks restarted with the new [upstream]")


# Actions on what belongs to the command destination alone: its TLS client pair (and the pending
# key of its rotation), the software update whose chunks come on its topics. Commands arrive
# through every JSON v1 destination, each verified with its own keys: through another one these
# would act on the command destination's state and tell the asking platform "ok" for it (a key
# rotation through another destination, of that destination's own key of the same id, replaced the
# command destination's key: its platform lost its commands, the asking one kept its old key).
COMMAND_DESTINATION_ONLY = {
    "rotate_command_key": "command keys are rotated",
    "tls_csr": "TLS client keys are rotated",
    "tls_install_cert": "TLS client keys are rotated",
    "update_start": "software updates are started",
}


def command_destination_actions(
    gw: Gateway, actions: dict[str, RemoteAction], primary: str
) -> dict[str, RemoteAction]:
    """`actions` with those of COMMAND_DESTINATION_ONLY refused (`not_permitted`) through any
    destination but `primary`, and `diag_certs` answering for the destination asked through."""
    from citynerve.gateway.uplink.commands import Caller, Chunked, RemoteAction
    from citynerve.gateway.uplink.encoding import RejectReason
    from citynerve.gateway.uplink.errors import CommandRejectedError

    def only_primary(name: str, action: RemoteAction) -> RemoteAction:
        async def handler(args: dict[str, Any], caller: Caller) -> Mapping[str, Any] | Chunked | None:
            via = caller.destination
            if via is not None and via != primary:
                raise CommandRejectedError(
                    RejectReason.NOT_PERMITTED,
                    f"{COMMAND_DESTINATION_ONLY[name]} through destination {primary!r}, which "
                    f"carries commands, not through {via!r}",
                )
            return await action.handler(args, caller)

        return RemoteAction(action.permission, handler)

    out = dict(actions)
    for name in COMMAND_DESTINATION_ONLY.keys() & out.keys():
        out[name] = only_primary(name, out[name])
    certs = out.get("diag_certs")
    if certs is not None:
        out["diag_certs"] = RemoteAction(certs.permission, _diag_certs(gw, certs, primary))
    return out


def _diag_certs(gw: Gateway, action: RemoteAction, primary: str) -> RemoteHandler:
    """`diag_certs` through the command destination: the credentials' figures (rotations
    included); through another: that destination's uplink's certificates. Both name it."""
    from citynerve.gateway.uplink.certexpiry import CertWatch
    from citynerve.gateway.uplink.commands import Caller

    async def handler(args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        via = caller.destination or primary
        uplink = next((u for u in gw.uplinks if u.destination == via), None)
        if via == primary or uplink is None:
            answer = await action.handler(args, caller)
            assert isinstance(answer, Mapping)  # Credentials._diag_certs: a status dict
            return {**answer, "destination": primary}
        # The watch that raises that destination's expiry alarms; one for the occasion where none
        # runs (a plain mqtt:// destination: a CA file at most).
        watch = gw.credentials.others.watches.get(via) if gw.credentials is not None else None
        if watch is None:
            tls = uplink.config.tls
            watch = CertWatch(
                lambda: tls, gateway_id=gw.config.gateway.id, warn_days=tls.expiry_warning_days,
                events=lambda event: None, wall=time.time,
            )  # fmt: skip
        return {**watch.status(), "destination": via}

    return handler


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
