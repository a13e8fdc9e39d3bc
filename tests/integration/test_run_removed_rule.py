"""A smoke rule raised on a detector stuck in alarm is removed from the config (or renamed) while its
alarm holds a leak's valve close back (the shipped interlock `water_on_during_fire`), against a real
pymodbus server: a riser valve controller and the detector, building 7 (test_run_removed_detector).

The registry kept the removed rule's alarm for ever (it dropped restored alarms only of rules the
engine still had: it could not tell a removed rule's alarm from a driver's), so the platform never
heard it cleared and its interlock entry held every valve close in the building: the valve open on
a live leak. The registry now knows which alarms the rule engine raised."""

from __future__ import annotations

from pathlib import Path

from citynerve.gateway.alarms import STATE_KEY as ALARMS_KEY
from citynerve.gateway.api import Event, EventState
from citynerve.gateway.config import load_config
from citynerve.gateway.store import AsyncOutbox, Lane
from tests.fieldtools.conftest import run_gateway, wait_for
from tests.integration.run_process import Run
from tests.integration.test_run_removed_detector import Site, site, stuck_smoke_holds_the_close

SMOKE_RULE = '[[rules.rules]]\nid = "smoke"\nkind = "boolean"\npoint = "smoke"\nseverity = "critical"\n'


def config(s: Site, folder: Path, *, smoke_rule: bool = True, rules: bool = True) -> Path:
    path = s.config(folder, detector=True)
    text = path.read_text()
    assert SMOKE_RULE in text
    if not rules:
        text = text[: text.index("[rules]")] + text[text.index("\n[[buses]]") :]
    elif not smoke_rule:
        text = text.replace(SMOKE_RULE, "")
    path.write_text(text)
    return path


async def smoke_raised_and_close_held(s: Site, folder: Path) -> None:
    """The first run: the detector's smoke raised, then a leak whose valve close the fire holds."""
    async with run_gateway(load_config(config(s, folder))) as gw:
        s.smoke()
        await wait_for(lambda: any(a.device_id == "sd-3" for a in gw.alarms.active()), 10.0)
        s.leak()  # after the smoke: a leak read first would close the valve before the interlock
        await wait_for(lambda: bool(gw.rules and gw.rules.actions._held), 10.0)  # interlocked
    assert s.valve_open()


async def smoke_clears(folder: Path) -> list[Event]:
    """The CLEARED events of sd-3's smoke stored for the platform."""
    cfg = load_config(folder / "gw.toml")
    async with AsyncOutbox.from_config(cfg.store) as outbox:
        rows = await outbox.peek(Lane.EVENT, limit=10_000)
    return [
        e
        for r in rows
        if isinstance(e := r.record, Event)
        and (e.device_id, e.kind, e.state) == ("sd-3", "smoke", EventState.CLEARED)
    ]


async def test_a_rule_removed_while_raised_is_cleared_and_releases_the_valve_after_a_restart(
    short_dir: Path,
) -> None:
    async with site() as s:
        await stuck_smoke_holds_the_close(s, short_dir)
        assert s.valve_open() and not await smoke_clears(short_dir)
        # The smoke rule is taken out of the config (the detector stays, still in alarm).
        async with Run(config(s, short_dir, smoke_rule=False)) as run:
            await run.until("alarm smoke on sd-3 (smoke) no longer active: cleared")
            done = await run.until("action close_valve on riser-1.valve = False: ")
            assert done.endswith(": done "), done
            assert not s.valve_open()
        assert len(await smoke_clears(short_dir)) == 1  # the platform is told


async def test_a_removed_rule_stays_cleared_through_a_reload_and_its_interlock_goes(short_dir: Path) -> None:
    async with site() as s:
        await smoke_raised_and_close_held(s, short_dir)
        async with run_gateway(load_config(config(s, short_dir, smoke_rule=False))) as gw:
            assert gw.rules is not None
            assert not any(a.kind == "smoke" for a in gw.alarms.active())
            await wait_for(lambda: not s.valve_open(), 10.0)
            assert gw.rules.actions.interlocks.blocking("close_valve", "riser-1", "valve", False) is None
            await gw.rules.actions.wait_idle()  # its read-back, before the reload restarts the bus
            report = await gw.reload()  # the same file: a reload changes nothing of this
            assert report["restart_needed_for"] == []
            assert not any(a.kind == "smoke" for a in gw.alarms.active())
        assert len(await smoke_clears(short_dir)) == 1


async def test_a_removed_rule_releases_the_valve_with_the_alarm_registry_unreadable(short_dir: Path) -> None:
    """The rules snapshot is the truth then, but an interlock entry of a rule no longer configured
    is dropped all the same (nothing could ever clear it)."""
    async with site() as s:
        await smoke_raised_and_close_held(s, short_dir)
        async with AsyncOutbox.from_config(load_config(short_dir / "gw.toml").store) as outbox:
            await outbox.put(ALARMS_KEY, "{damaged")
        async with run_gateway(load_config(config(s, short_dir, smoke_rule=False))) as gw:
            assert gw.alarms.unreadable and gw.rules is not None
            await wait_for(lambda: not s.valve_open(), 10.0)
            await gw.rules.actions.wait_idle()


async def test_the_rules_section_removed_clears_the_rule_alarms(short_dir: Path) -> None:
    async with site() as s:
        await smoke_raised_and_close_held(s, short_dir)
        async with run_gateway(load_config(config(s, short_dir, rules=False))) as gw:
            assert gw.rules is None
            assert not any(a.kind in ("smoke", "leak") for a in gw.alarms.active())
        assert len(await smoke_clears(short_dir)) == 1
