"""Reloading the config of a running gateway (`citynerve config reload`, `systemctl reload`, SIGHUP,
`devices add/remove`, a remote config) and clearing the alarms nobody can clear any more (at start
and at every reload). Functions over the running `Gateway` (`gw`), moved from runtime.py.

One reload at a time: `Gateway.reload` holds a lock around the whole of it (plan, stop, swap,
start). Overlapping reloads each planned from the config before the first one swapped it and each
started a new owner for the same bus: the earlier owners were orphaned, still polling (several
connections to one Modbus server, "serial port in use" and a false `device_offline`), and a
SIGTERM never completed, the task group waiting for them.

The rule engine binds its rules to the devices when it is built. A reload that changes the devices
builds it again on the new devices (`rebind_rules`), with the rules in effect and the old engine's
state (its snapshot): a renamed device's rules apply at once, as after a restart. Before, the
reload answered "rules take it only after a restart" but cleared the old id's alarm and dropped
its interlock entry at once, while the new id raised nothing until a restart.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from citynerve.gateway.api import ConfigError
from citynerve.gateway.heap import settle_heap
from citynerve.gateway.reload_plan import plan_reload

if TYPE_CHECKING:
    from citynerve.gateway.rules import PersistentRuleEngine, RuleEngine
    from citynerve.gateway.runtime import Gateway

__all__ = ["rebind_rules", "reconcile_alarms", "reload_config", "reload_logged"]

log = logging.getLogger("citynerve.gateway")


async def reload_config(gw: Gateway, why: str = "") -> dict[str, Any]:
    """Re-read the config file and apply bus and device changes without a restart (the caller
    holds the reload lock); the outcome is logged. Raises ConfigError with every issue (logged
    too: a refused reload leaves a line in the gateway's own log); the gateway runs on as it was."""
    from citynerve.gateway.config import load_config

    by = f" ({why})" if why else ""
    try:  # --allow-insecure-secrets at start holds for reloads
        new = load_config(
            gw.config.source, allow_insecure_secrets=gw.config.security.allow_insecure_secret_files
        )
    except ConfigError as err:
        log.error("config reload%s refused, the gateway runs on as it was: %s", by, err)
        raise
    for warning in new.warnings:
        log.warning("%s", warning)
    plan = plan_reload(gw.config, new, gw._secrets)
    gw._secrets = plan.secrets
    gw._reloaded = new
    new = plan.config
    restart_needed_for = list(plan.restart_needed_for)
    # The rules first, while the buses still run: a local action's write finishes on its owner.
    if gw.rules is not None and new.devices != gw._rules_devices and not await rebind_rules(gw, new):
        restart_needed_for.append("rules")
    for bus_id in plan.changed + plan.removed:
        await gw._stop_owner(bus_id)
    gw.config = new
    gw._devices = {d.id: d for d in new.devices}
    assert gw.pipeline is not None and gw.wiring is not None
    gw.pipeline.update_devices(gw._devices)
    reconcile_alarms(gw)  # alarms of removed devices are cleared
    gw.wiring = replace(gw.wiring, config=new)
    for bus_id in plan.changed + plan.added:  # wired exactly as at start: same sink, rules, state, alarms
        gw.buses[bus_id] = gw._supervisor(bus_id)
        gw._start_owner(bus_id)
    gw.restart_pending = restart_needed_for
    changed, added, removed = plan.changed, plan.added, plan.removed
    log.info("config reloaded%s: buses changed %s, added %s, removed %s", by, changed, added, removed)
    if restart_needed_for:
        sections = ", ".join(f"[{s}]" for s in restart_needed_for)
        log.warning("config reloaded%s: %s run as at start until a restart", by, sections)
    settle_heap()
    if gw.remote_config is not None:  # a local rollback changes the version in status too
        gw.remote_config.refresh()
    return {**plan.report(), "restart_needed_for": restart_needed_for}


async def reload_logged(gw: Gateway, why: str) -> None:
    """`gw.reload(why)` for a signal: nobody waits for its answer, so every outcome is logged."""
    try:
        await gw.reload(why)
    except ConfigError:
        pass  # logged with every issue by reload_config
    except Exception:
        log.exception("config reload (%s) failed", why)


async def rebind_rules(gw: Gateway, config: Any) -> bool:
    """A new rule engine on `config`'s devices, with the rules in effect (`config.rules`: a changed
    `[rules]` waits for a restart) and the running engine's state: its snapshot, what it last
    wrote. Built in a worker thread while the running engine goes on; then waits for the running
    engine's writes and save (a save it put off, as a second raise within 30 s does, goes at once:
    the reload took up to 30 s more per raise during an incident), and takes its snapshot and swaps
    without a pause, so no reading or event falls between the two. False (logged) if the engine
    cannot be built."""
    from citynerve.gateway.rules.persist import PersistentRuleEngine, build_off_loop

    old = gw.rules
    assert old is not None and gw.pipeline is not None and gw.wiring is not None

    def make() -> PersistentRuleEngine:
        return PersistentRuleEngine(
            config.rules,
            config.devices,
            state=old.keeper.store,
            target=old.actions.target,
            events=old.actions.events,
            steady=old.steady,
        )

    try:  # in a worker thread, while the old engine runs on: the loop polls and raises meanwhile
        engine = await build_off_loop(make)
    except Exception:  # a rule bug must not take the running engine away: it stays on the old devices
        log.exception("rules not bound to the reloaded devices: they take them at a restart")
        return False
    while old.actions._tasks or (old._saving is not None and not old._saving.done()):
        await old.actions.wait_idle()
        if old._saving is not None and not old._saving.done():
            old._hurry.set()  # a save put off for PROMPT_SAVE_MIN_S (SD wear) goes now: the reload waits
            await old._saving
    try:  # from here to the swap, no await: no reading or event falls between the two
        engine.restore(json.loads(json.dumps(old.snapshot())))  # a copy: nothing shared with the old one
        carry_conditions(old, engine)
    except Exception:  # a rule bug must not take the running engine away: it stays on the old devices
        log.exception("rules not bound to the reloaded devices: they take them at a restart")
        return False
    written = engine.actions._written
    written.update((k, v) for k, v in old.actions._written.items() if k[0] in engine.devices)
    engine.actions._writes = old.actions._writes
    swap_rules(gw, engine, config.devices)
    log.info("rules: %d rule instances on %d devices (reloaded)", len(engine.instances), len(engine.devices))
    return True


def carry_conditions(old: RuleEngine, engine: RuleEngine) -> None:
    """What a restart deliberately does not restore, the rebuilt engine takes from the running one,
    instance by instance (same rule, same device): a `missing` rule's time of the last reading, a
    household node's. A reload is no start: with a new grace period at every reload, a dead meter's
    alarm (after_s typically an hour) came after_s after the last reload, never while they came."""
    for key, inst in engine.instances.items():
        running = old.instances.get(key)
        if running is not None:
            inst.cond.carry(running.cond)


def swap_rules(gw: Gateway, engine: PersistentRuleEngine, devices: Any) -> None:
    """Every holder of the rule engine takes `engine` (no await in between)."""
    assert gw.pipeline is not None and gw.wiring is not None
    gw.rules = engine
    gw._rules_devices = devices
    gw.pipeline.rules = engine
    gw.wiring.sink.rules = engine
    gw._rules_now = engine.now
    engine._schedule_save()  # the store holds the new engine's snapshot, not the old one's


def reconcile_alarms(gw: Gateway) -> None:
    """Restored alarms nobody can clear any more are cleared now, and the platform is told:
    rule alarms the rule engine's (older) snapshot does not hold active (still true, the rule
    raises them again), alarms of rules no longer configured (or of no rules section), and
    alarms of devices or buses no longer configured. The other way, the registry being newer:
    rule alarms and interlock entries the engine restored as raised that the registry no
    longer holds cleared before the stop, and the engine forgets them.
    The registry is cleaned first: an alarm it clears here (a smoke detector stuck in alarm,
    removed from the config, or its smoke rule) must not keep its interlock entry, which held
    every valve close in its building; the writes that entry held run at the next tick."""
    if gw.pipeline is None:
        return
    rules = gw.rules
    ids = {i.rule.id for i in rules.instances.values()} if rules is not None else set()
    active = [(a.device_id, a.kind, a.rule) for a in rules.active()] if rules is not None else []
    gone = gw.alarms.reconcile(ids, active)
    # Alarms on the gateway itself (certificate_expiry) stay: it is always configured.
    keep = {*gw._devices, *(b.id for b in gw.config.buses), gw.config.gateway.id}
    gone += gw.alarms.forget_devices(keep)
    if rules is not None:
        rules.actions.interlocks.forget_devices(keep)  # also with the registry unreadable
        rules.actions.interlocks.forget_rules(ids)
        if not gw.alarms.unreadable:
            registry = gw.alarms.active()
            rules.forget_cleared((a.device_id, a.kind, a.rule, a.value) for a in registry)
    for a in gone:
        log.warning("alarm %s on %s (%s) no longer active: cleared", a.kind, a.device_id, a.rule)
        gw.pipeline.event(a.cleared("no longer active after a restart or reload", gw.clock.wall()))
