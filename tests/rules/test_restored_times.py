"""A rules snapshot with a time later than its own `saved_at` (one flipped bit on the SD card), restored
by a real `citynerve run` polling a pymodbus server (a riser's leak input, tests/integration).

A pending hold's start read as 9796695682 instead of 1796695682 kept the leak pending for good while
the leak went on (the hold counted from 2280), and every snapshot saved the damage again. Such a
time is damage: the instance starts fresh, with a warning naming the rule and the device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.api import EventState, Reading, SteadyWall
from citynerve.gateway.config import load_config
from citynerve.gateway.rules import STATE_KEY, RuleEngine, RulesConfig
from citynerve.gateway.store import AsyncOutbox
from tests.fieldtools.conftest import run_gateway, wait_for
from tests.integration.run_process import Run
from tests.integration.test_run_removed_detector import Site, site
from tests.rules.conftest import T0, dev
from tests.rules.test_action_holds import BootClock

LEAK = 'point = "leak"\nseverity = "major"\n'
ACTION = "[[rules.actions]]\n"


def config(s: Site, folder: Path, hold_s: float) -> Path:
    path = s.config(folder, detector=False)
    text = path.read_text()
    assert LEAK in text and ACTION in text
    # Without the valve action: a stop during its read-back waits for its timeouts (30 s).
    text = text[: text.index(ACTION)] + text[text.index("\n[[buses]]") :]
    path.write_text(text.replace(LEAK, f"{LEAK}hold_s = {hold_s}\n", 1))
    return path


async def stored(path: Path, text: str | None = None) -> str:
    """The rules snapshot in the gateway's store (replaced by `text` if given)."""
    async with AsyncOutbox.from_config(load_config(path).store) as outbox:
        if text is not None:
            await outbox.put(STATE_KEY, text)
        raw = await outbox.get(STATE_KEY)
    assert raw is not None
    return raw


async def test_a_flipped_bit_in_a_pending_holds_start_no_longer_keeps_it_pending(short_dir: Path) -> None:
    async with site() as s:
        s.leak()
        # Run 1 (in-process, so the test knows when the leak is pending): a 600 s hold, stopped.
        async with run_gateway(load_config(config(s, short_dir, 600))) as gw:
            await wait_for(lambda: gw.rules is not None and gw.rules.waiting == 1, 10.0)
        raw = await stored(short_dir / "gw.toml")
        at = raw.index('["pending",') + len('["pending",')
        assert raw[at] == "1"
        snap = json.loads(await stored(short_dir / "gw.toml", raw[:at] + "9" + raw[at + 1 :]))  # 0x31 ^ 0x08
        since = snap["instances"]["leak|riser-1"][0][1]
        assert since - snap["saved_at"] > 7e9
        # Run 2: the real process, the hold now 1 s; the leak goes on.
        async with Run(config(s, short_dir, 1)) as run:
            await run.until("rule leak on riser-1: raised", timeout_s=30.0)  # never, before
            warned = await run.until("rules snapshot: cannot restore leak|riser-1")
            assert "rule leak on riser-1: restored alarm since 97" in warned, warned
            assert "after the snapshot was saved" in warned and warned.endswith("starting it fresh"), warned
        snap = json.loads(await stored(short_dir / "gw.toml"))  # the damage is not saved again
        alarm = snap["instances"]["leak|riser-1"][0]
        assert alarm[0] == "active" and alarm[1] <= snap["saved_at"], snap


# The same check for every restored time, on the real engine with a box clock (test_restart_clock_behind).
RULES: dict[str, Any] = {
    "rules": [
        {"id": "hot", "kind": "threshold", "point": "value", "above": 10, "hold_s": 30},
        {"id": "use", "kind": "consumption", "point": "total", "window": "sliding", "above": 5},
        {"id": "smoke", "kind": "boolean", "point": "smoke", "severity": "critical"},
    ]
}
POINTS = ("value", "total", "smoke")


def engine(clock: BootClock) -> RuleEngine:
    return RuleEngine(RulesConfig.model_validate(RULES), [dev("d1", POINTS)], steady=SteadyWall(clock))


def saved(flaps: int = 0) -> dict[str, Any]:
    """A snapshot at T0 + 60: hot raised at T0 + 40, the meter read at T0 + 50, smoke toggled
    `flaps` times."""
    clock = BootClock(T0)
    e = engine(clock)
    e.evaluate([Reading("d1", "value", 50.0, "", T0), Reading("d1", "total", 100.0, "", T0)])
    for i in range(flaps):
        clock.advance(1)
        e.evaluate([Reading("d1", "smoke", i % 2 == 0, "", T0)])
    clock.wall_t, clock.mono_t = T0 + 40, 140.0
    e.tick(e.now())
    clock.advance(10)
    e.evaluate([Reading("d1", "total", 101.0, "", T0)])
    clock.advance(10)
    return json.loads(json.dumps(e.snapshot()))


def flip(t: float) -> float:
    """The time with its first digit's bit 0x08 flipped (1 -> 9), as on a damaged card."""
    text = repr(t)
    return float(chr(ord(text[0]) ^ 0x08) + text[1:])


@pytest.mark.parametrize(
    ("what", "where"),
    [
        ("alarm since", ("hot|d1", 0, 1)),
        ("raised_at", ("hot|d1", 2)),
        ("condition time", ("use|d1", 1, 0, 1)),
    ],
)
def test_a_restored_time_after_the_save_starts_that_instance_fresh(
    what: str, where: tuple[Any, ...], caplog: pytest.LogCaptureFixture
) -> None:
    snap = saved()
    node = snap["instances"]
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = flip(node[where[-1]])
    clock = BootClock(T0 + 120)
    e = engine(clock)
    assert e.restore(snap) == 2  # the others are restored
    assert f"RestoredTimeError: rule {where[0].split('|')[0]} on d1: restored {what} 9" in caplog.text
    hot, use = e.instances["hot|d1"], e.instances["use|d1"]
    if what == "condition time":  # fresh: the meter's next read counts again (it was out of order)
        assert hot.alarm.active
        e.evaluate([Reading("d1", "total", 100.0, "", 0.0)])
        clock.advance(60)
        out = e.evaluate([Reading("d1", "total", 107.0, "", 0.0)])
        assert [(ev.rule, ev.state) for ev in out] == [("use", EventState.RAISED)]
    else:  # fresh: the next reading starts the hold, which runs out after 30 s
        assert not hot.alarm.active and hot.raised_at == 0.0
        e.evaluate([Reading("d1", "value", 50.0, "", 0.0)])
        clock.advance(30)
        assert [(ev.rule, ev.state) for ev in e.tick(e.now())] == [("hot", EventState.RAISED)]
        assert use.cond.latest_time() == T0 + 50


def test_a_flapping_time_after_the_save_starts_that_damper_fresh(caplog: pytest.LogCaptureFixture) -> None:
    snap = saved(flaps=8)
    assert snap["flapping"]["smoke|d1"][0] is True
    snap["flapping"]["smoke|d1"][2] = flip(snap["flapping"]["smoke|d1"][2])  # the last transition
    e = engine(BootClock(T0 + 120))
    e.restore(snap)
    assert "of smoke|d1 (RestoredTimeError: rule smoke on d1: restored flapping time 9" in caplog.text
    assert not e.flapping.held and e.instances["smoke|d1"].flap.idle
    untouched = engine(BootClock(T0 + 120))
    untouched.restore(saved(flaps=8))
    assert untouched.flapping.held


@pytest.mark.parametrize("boot", [60.0, T0 + 120])  # 1970 (the clock behind the save) and a right clock
def test_times_up_to_the_save_are_restored_on_any_boot_clock(boot: float) -> None:
    snap = saved()
    snap["instances"]["use|d1"][1][0][1] = snap["saved_at"] + 30  # within the tolerance
    e = engine(BootClock(boot))
    assert e.restore(snap) == 3
    assert e.instances["hot|d1"].alarm.active


# The size of what is loaded: a snapshot is only as big as the config can make it.


async def test_a_snapshot_bigger_than_the_config_can_make_is_not_loaded(short_dir: Path) -> None:
    """3 MB of away ids (a damaged card, a file not ours; the review's had 138 MB) on a site of one
    riser: not parsed, the gateway starts fresh and the snapshot it saves at stop is its own."""
    async with site() as s:
        path = config(s, short_dir, 1)
        async with run_gateway(load_config(path)):
            pass
        snap = json.loads(await stored(path))
        snap["away"] = [f"household-{i:032d}" for i in range(70_000)]
        await stored(path, json.dumps(snap))
        async with Run(path) as run:
            warned = await run.until("rules snapshot of ")
            assert "characters, more than this config's rules can make" in warned, warned
            assert warned.endswith("not loaded, starting fresh"), warned
            s.leak()
            await run.until("rule leak on riser-1: raised")
        assert len(await stored(path)) < 10_000


async def test_away_ids_and_texts_the_config_cannot_make_are_dropped(short_dir: Path) -> None:
    """Under the size bound: away flags of no configured device or household are dropped (one
    warning with their count), the riser's own is kept; a restored text value longer than the store
    takes is dropped."""
    async with site() as s:
        path = config(s, short_dir, 600)
        s.leak()
        async with run_gateway(load_config(path)) as gw:
            await wait_for(lambda: gw.rules is not None and gw.rules.waiting == 1, 10.0)
        snap = json.loads(await stored(path))
        snap["away"] = ["riser-1", *(f"household-{i:032d}" for i in range(10_000))]
        snap["instances"]["leak|riser-1"][0][2] = "x" * 100_000  # the pending alarm's value
        await stored(path, json.dumps(snap))
        async with Run(path) as run:
            await run.until("rules: 2 rule instances on 1 devices, 2 restored")
            assert any("10000 away flags name no configured device or household" in m for m in run.messages)
        snap = json.loads(await stored(path))
        assert snap["away"] == ["riser-1"]
        assert snap["instances"]["leak|riser-1"][0][2] in (None, True)  # not the text (True: read again)
