"""Time faults: the wall clock steps by days under a running gateway; the systemd watchdog.

Each scenario runs the real `citynerve run` (libfaketime steps its wall clock, its monotonic clock
stays real) against a simulated Modbus building, and for commands a real Mosquitto and platform.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import textwrap
import time
from pathlib import Path
from typing import Any

from citynerve.gateway.api import Event, EventState
from citynerve.hil.faults import Broken, scenario
from citynerve.hil.faults._time_gateway import (
    HOLD_S,
    SMOKE_UNIT,
    GatewayRun,
    building_and_gateway,
    short_folder,
)
from citynerve.hil.sim.clock import NotifySocket, SteppedWallClock

DAYS2 = 2 * 86400.0


# -- clock steps ---------------------------------------------------------------------------------


def _rule_events(gw: GatewayRun) -> list[tuple[str, EventState]]:
    return [(e.rule, e.state) for e in gw.events()]


async def _clock_step(folder: Path, step_s: float) -> str:
    with short_folder(folder) as folder:
        clock = SteppedWallClock(folder)
        async with building_and_gateway(folder, clock.env()) as (building, gw):
            await gw.wait_online()
            await asyncio.sleep(2.0)  # the missing-data rule has seen data and ticks
            building.trigger_smoke(SMOKE_UNIT)
            t0 = time.monotonic()
            await asyncio.sleep(2.0)
            clock.set_offset(step_s)  # the wall clock steps during the hold time
            raised = await gw.wait_for(
                f"smoke_held raised (hold {HOLD_S:.0f} s)",
                lambda: ("smoke_held", EventState.RAISED) in _rule_events(gw),
                HOLD_S + 12.0,
            )
            dt = time.monotonic() - t0
            assert raised
            if dt < HOLD_S - 0.05:
                raise Broken(f"raised after {dt:.1f} s, before its {HOLD_S:.0f} s hold time")
            if dt > HOLD_S + 6.0:
                raise Broken(f"raised after {dt:.1f} s: {dt - HOLD_S:.1f} s beyond its hold time")
            building.clear_smoke(SMOKE_UNIT)
            await gw.wait_for(
                "smoke_held cleared",
                lambda: ("smoke_held", EventState.CLEARED) in _rule_events(gw),
                15.0,
            )
            await asyncio.sleep(4.0)  # room for a false missing-data or offline alarm to show
            events = _rule_events(gw)
            false = [e for e in events if e[0] != "smoke_held"]
            if false:
                raise Broken(f"false alarms after a {step_s / 86400:+.0f} day step: {false}")
            if events != [("smoke_held", EventState.RAISED), ("smoke_held", EventState.CLEARED)]:
                raise Broken(f"smoke_held did not raise once and clear once: {events}")
            st = await gw.wait_for("a status answer", gw.status, 30.0)  # None while a loaded box is slow
            steps = (st or {}).get("clock", {}).get("wall_steps")
            if not steps:
                raise Broken(f"the gateway did not notice the step (status clock: {(st or {}).get('clock')})")
            stamps = [e.ts for e in gw.events()]
            expect = time.time() + step_s
            if abs(stamps[-1] - expect) > 120:
                raise Broken(f"events not stamped on the stepped wall clock: {stamps[-1]} vs {expect}")
            return (
                f"wall clock stepped {step_s / 86400:+.0f} days during a {HOLD_S:.0f} s hold: raised after "
                f"{dt:.1f} s; no missing-data or offline alarm; {steps} step(s) in status"
            )


@scenario(
    "time.clock_step_forward",
    area="time",
    promise="wall clock +2 days mid-hold: the alarm raises after its hold time, no false alarm",
)
async def clock_step_forward(folder: Path) -> str:
    return await _clock_step(folder, DAYS2)


@scenario(
    "time.clock_step_back",
    area="time",
    promise="wall clock -2 days mid-hold: the alarm is not delayed, no false alarm",
)
async def clock_step_back(folder: Path) -> str:
    return await _clock_step(folder, -DAYS2)


# -- command replay ------------------------------------------------------------------------------


@scenario(
    "time.command_replay_after_clock_back",
    area="time",
    promise="a command replayed after the wall clock is set back is rejected",
)
async def command_replay_after_clock_back(folder: Path) -> str:
    from citynerve.hil.platform import CommandSigner, MosquittoBroker, PlatformConsumer

    key = bytes(range(32))
    with short_folder(folder) as folder:
        (folder / "cmd.key").write_text(key.hex())
        (folder / "cmd.key").chmod(0o600)  # secret files others may read are refused
        broker = MosquittoBroker(workdir=folder)
        broker.start()
        try:
            extra = textwrap.dedent(
                f"""
                [upstream]
                brokers = ["{broker.url}"]
                [upstream.commands]
                enabled = true
                hmac_key_file = "{folder / "cmd.key"}"
                max_clock_skew_s = 1
                max_lifetime_s = 6
                """
            )
            clock = SteppedWallClock(folder)
            consumer = PlatformConsumer(host=broker.host, port=broker.port, db_path=folder / "platform.db")
            async with (
                consumer,
                building_and_gateway(folder, clock.env(), extra=extra, rules=False) as (_, gw),
            ):
                await consumer.wait_connected()
                await gw.wait_online()

                async def uplink_up() -> bool:
                    st = await gw.status()
                    return bool(st and (st.get("uplink") or {}).get("connected"))

                await gw.wait_for("the uplink connected", uplink_up, 30.0)
                await asyncio.sleep(1.0)  # its command subscription follows the connect
                signer = CommandSigner(hmac_key=key)
                topic = "citynerve/gw-time/cmd"

                async def outcome(cmd: dict[str, Any]) -> tuple[str, str | None]:
                    async def answered() -> dict[str, Any] | None:
                        results = await consumer.query(lambda s: s.results("gw-time"))
                        mine = [r for r in results if r["command_id"] == cmd["id"]]
                        return mine[-1] if len(mine) > seen.get(cmd["id"], 0) else None

                    await consumer.publish(topic, CommandSigner.payload(cmd))
                    r = await gw.wait_for(f"the result of command {cmd['id']}", answered, 30.0)
                    seen[cmd["id"]] = seen.get(cmd["id"], 0) + 1
                    return str(r["outcome"]), r.get("reason")

                seen: dict[str, int] = {}
                captured = signer.command("gw-time", "resend_inventory", {}, lifetime_s=6.0)
                issued = captured["issued_at_ms"] / 1000
                first = await outcome(captured)
                if first != ("ok", None):
                    raise Broken(f"a fresh signed command was not carried out: {first}")
                await asyncio.sleep(8.0)  # the captured command expires (6 s lifetime + 1 s skew)
                later = await outcome(signer.command("gw-time", "resend_inventory", {}, lifetime_s=6.0))
                if later != ("ok", None):
                    raise Broken(f"a fresh signed command was not carried out: {later}")
                # Someone sets the gateway's clock back to within the captured command's lifetime
                # (its nonce was pruned: on the wall clock it had expired when the later one came).
                clock.set_offset(issued + 0.5 - time.time())
                replay = await outcome(captured)
                if replay[0] == "ok":
                    raise Broken("the captured command was carried out again after the clock went back")
                clock.set_offset(-DAYS2)
                replay2 = await outcome(captured)
                if replay2[0] == "ok":
                    raise Broken(
                        "the captured command was carried out again after the clock went back 2 days"
                    )
                return (
                    f"replays after the clock went back into the command's lifetime and 2 days: "
                    f"{replay[1]}, {replay2[1]}"
                )
        finally:
            broker.close()


# -- a clock that is not synchronised yet -------------------------------------------------------


@scenario(
    "time.unsynced_events_corrected_after_sync",
    area="time",
    promise="events stamped before NTP sync are marked and sent with their true time once synced",
)
async def unsynced_events_corrected_after_sync(folder: Path) -> str:
    from citynerve.hil.platform import CommandSigner, MosquittoBroker, PlatformConsumer

    stale_s = -30 * 86400.0  # a Pi without RTC boots a month in the past
    key = bytes(range(32))
    with short_folder(folder) as folder:
        (folder / "ack.key").write_text(key.hex())
        (folder / "ack.key").chmod(0o600)  # secret files others may read are refused
        broker = MosquittoBroker(workdir=folder)  # its port is known, it starts later: uplink down
        # End-to-end acks: the gateway may reconnect and publish before the platform subscribed;
        # it keeps the event and sends it again until the platform has acked it.
        extra = textwrap.dedent(
            f"""
            [upstream]
            brokers = ["{broker.url}"]
            e2e_ack = true
            e2e_resend_after_s = 2
            commands = {{ hmac_key_file = "{folder / "ack.key"}" }}
            [upstream.backoff]
            initial_s = 0.2
            max_s = 1.0
            [clock]
            sync = "file"
            sync_file = "var/clock-synchronized"
            """
        )
        clock = SteppedWallClock(folder)
        clock.set_offset(stale_s)
        consumer: PlatformConsumer | None = None
        try:
            async with building_and_gateway(folder, clock.env(), extra=extra) as (building, gw):
                await gw.wait_online()
                st = await gw.wait_for("a status answer", gw.status, 30.0)  # None while a loaded box is slow
                if (st or {}).get("clock", {}).get("synchronized") is not False:
                    raise Broken(
                        f"the gateway did not see its clock as unsynchronised: {(st or {}).get('clock')}"
                    )
                building.trigger_smoke(SMOKE_UNIT)
                t_smoke = time.time()

                def marked() -> list[Event]:
                    return [
                        e for e in gw.events() if e.rule == "smoke_held" and e.attrs.get("clock_unsynced")
                    ]

                (event,) = await gw.wait_for("the smoke alarm marked clock_unsynced", marked, HOLD_S + 15)
                if abs(event.ts - (t_smoke + HOLD_S + stale_s)) > 30:
                    raise Broken(f"the unsynced stamp is not the stale clock's: {event.ts}")
                # NTP arrives: the wall clock steps a month forward and the sync source says so.
                clock.set_offset(0.0)
                (folder / "var" / "clock-synchronized").touch()

                async def synced() -> bool:
                    st = await gw.status()
                    return bool(st and st["clock"].get("synchronized") and st["clock"].get("sync_wall"))

                await gw.wait_for("the gateway to see its clock synchronised", synced, 15)
                broker.start()  # the platform becomes reachable: the event is still in the outbox
                consumer = PlatformConsumer(
                    host=broker.host,
                    port=broker.port,
                    db_path=folder / "platform.db",
                    ack_signer=CommandSigner(hmac_key=key),
                )
                await consumer.__aenter__()
                await consumer.wait_connected()

                async def received() -> list[dict[str, Any]]:
                    assert consumer is not None
                    events = await consumer.query(lambda s: s.events("gw-time"))
                    return [e for e in events if e.get("rule") == "smoke_held"]

                (sent,) = await gw.wait_for("the platform to receive the alarm", received, 60)
                true_ts = sent["ts_ms"] / 1000
                error = true_ts - (t_smoke + HOLD_S)
                if not sent["attrs"].get("ts_corrected") or abs(error) > 5:
                    raise Broken(
                        f"sent with ts {true_ts} ({error:+.0f} s from the true time): {sent['attrs']}"
                    )
                return (
                    f"alarm stamped {stale_s / 86400:+.0f} days off while unsynchronised; sent after the "
                    f"sync with ts_corrected, {error:+.1f} s from the true time"
                )
        finally:
            if consumer is not None:
                await consumer.stop()
            broker.close()


# -- operator flags restored before NTP ----------------------------------------------------------


@scenario(
    "time.maintenance_restored_before_sync",
    area="time",
    promise="a maintenance window restored at a 1970 boot (no RTC) ends when NTP syncs past its end",
)
async def maintenance_restored_before_sync(folder: Path) -> str:
    from citynerve.gateway.control import ask

    extra = '\n[clock]\nsync = "file"\nsync_file = "var/clock-synchronized"\n'
    with short_folder(folder) as folder:
        flag = folder / "var" / "clock-synchronized"
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch()
        clock = SteppedWallClock(folder)
        async with building_and_gateway(folder, clock.env(), extra=extra, rules=False) as (_, gw):
            await gw.wait_online()
            args = {"device_id": "sd-11", "for_s": 7200}
            await ask(gw.sock, "operator", request="maintenance", args=args, user="crew")
        # The box restarts with no RTC: the wall clock reads 1970 and nothing says it is synchronised.
        flag.unlink()
        clock.set_offset(-(time.time() - 3600))
        async with building_and_gateway(folder, clock.env(), extra=extra, rules=False) as (_, gw):
            await gw.wait_online()
            st = await gw.wait_for("a status answer", gw.status, 30.0)
            (window,) = st["operator"]["maintenance"]
            if window["remaining_s"] > 30 * 86400:
                raise Broken(f"restored at a 1970 boot with {window['remaining_s']:.0f} s left")
            # NTP steps the clock to the real time + 3 days (the window ended long ago) and says so.
            clock.set_offset(3 * 86400.0)
            flag.touch()

            async def ended() -> bool:
                st = await gw.status()
                return bool(st and st["clock"].get("synchronized") and not st["operator"]["maintenance"])

            await gw.wait_for("the window to end at the sync", ended, 10.0)

            def audited() -> list[Event]:
                return [
                    e
                    for e in gw.events()
                    if e.kind == "operator" and e.attrs.get("what") == "maintenance_end"
                ]

            (audit,) = await gw.wait_for("the window's end audited", audited, 5.0)
            if audit.attrs.get("who") != "expiry":
                raise Broken(f"ended by {audit.attrs}")
            return (
                f"restored at a 1970 boot with {window['remaining_s'] / 86400:.0f} days left (the cap); "
                "ended and audited when NTP synchronised the clock"
            )


# -- the systemd watchdog ------------------------------------------------------------------------

WATCHDOG_S = 2.0
LOCK_BUSY_S = 10.0  # the gateway's SQLite busy timeout: a locked commit fails after this


def _notify(folder: Path) -> NotifySocket:
    return NotifySocket(folder / "notify.sock")


@scenario(
    "time.watchdog_ready_and_pings",
    area="time",
    promise="READY=1 once buses and outbox are up, WATCHDOG=1 while all progress, STOPPING=1 at stop",
)
async def watchdog_ready_and_pings(folder: Path) -> str:
    with short_folder(folder) as folder:
        notify = _notify(folder)
        try:
            async with building_and_gateway(folder, notify.env(WATCHDOG_S)) as (_, gw):
                ok = await asyncio.to_thread(
                    notify.wait_for, lambda: bool(notify.with_key("READY")), 60.0, gw.alive
                )
                if not ok:
                    raise Broken(f"no READY=1 from the gateway:\n{gw.tail()}")
                ready_at = notify.with_key("READY")[0][0]
                await asyncio.to_thread(notify.wait_for, lambda: False, 4 * WATCHDOG_S, gw.alive)
                pings = [t for t, _ in notify.with_key("WATCHDOG", since=ready_at)]
                if len(pings) < 3:
                    raise Broken(f"{len(pings)} WATCHDOG=1 pings in {4 * WATCHDOG_S:.0f} s:\n{gw.tail()}")
                gaps = [b - a for a, b in itertools.pairwise(pings)]
                if max(gaps) >= WATCHDOG_S:
                    raise Broken(f"watchdog pings {max(gaps):.1f} s apart, WatchdogSec is {WATCHDOG_S:.0f} s")
                code = await asyncio.to_thread(gw.stop)
                notify.poll(0.5)
                if not notify.with_key("STOPPING"):
                    raise Broken("no STOPPING=1 at stop")
                if code != 0:
                    raise Broken(f"gateway exited {code} on SIGTERM")
                status = notify.with_key("STATUS")[-1][1]["STATUS"]
                return (
                    f"READY=1, {len(pings)} pings (max gap {max(gaps):.1f} s), STOPPING=1; STATUS={status!r}"
                )
        finally:
            notify.close()


@scenario(
    "time.watchdog_hung_writer_stops_pings",
    area="time",
    promise="the outbox writer hangs (file locked by another process): watchdog pings stop; "
    "a failed commit is progress",
)
async def watchdog_hung_writer_stops_pings(folder: Path) -> str:
    with short_folder(folder) as folder:
        notify = _notify(folder)
        try:
            async with building_and_gateway(folder, notify.env(WATCHDOG_S), meter=True) as (building, gw):
                ok = await asyncio.to_thread(
                    notify.wait_for, lambda: len(notify.with_key("WATCHDOG")) >= 2, 60.0, gw.alive
                )
                if not ok:
                    raise Broken(f"no watchdog pings before the hang:\n{gw.tail()}")
                # Another process takes the outbox's write lock and keeps it: every commit of the
                # writer now waits (SQLite's busy timeout, then a retry) while readings keep coming.
                lock = sqlite3.connect(gw.db, timeout=30.0, isolation_level=None)
                try:
                    lock.execute("BEGIN IMMEDIATE")
                    hung_at = time.monotonic()
                    building.trigger_smoke(SMOKE_UNIT)  # an alarm to commit, too
                    # Until the busy timeout ends the commit attempt (a failed attempt is progress:
                    # a full disk must not make systemd restart the gateway and lose what is in RAM).
                    until = hung_at + LOCK_BUSY_S - 0.5
                    await asyncio.to_thread(
                        notify.wait_for, lambda: False, until - time.monotonic(), gw.alive
                    )
                    quiet_from = hung_at + 2 * WATCHDOG_S + 1.0
                    late = [
                        t - hung_at for t, _ in notify.with_key("WATCHDOG", since=quiet_from) if t < until
                    ]
                    if late:
                        raise Broken(
                            f"watchdog pings {[round(x, 1) for x in late]} s after the outbox writer hung"
                        )
                    statuses = [m["STATUS"] for _, m in notify.with_key("STATUS", since=hung_at)]
                    if not any("outbox.writer" in s for s in statuses):
                        raise Broken(f"STATUS never named the hung writer: {statuses[-3:]}")
                    # The busy timeout fails the commit: a failed attempt is progress (the writer
                    # keeps its records and retries; a restart would not mend a full disk).
                    end = hung_at + LOCK_BUSY_S + 3.5
                    await asyncio.to_thread(notify.wait_for, lambda: False, end - time.monotonic(), gw.alive)
                    after_fail = [t for t, _ in notify.with_key("WATCHDOG", since=until) if t < end]
                    if not after_fail:
                        raise Broken("a failed commit did not count as the writer's progress")
                finally:
                    lock.rollback()
                    lock.close()
                resumed_from = time.monotonic()
                ok = await asyncio.to_thread(
                    notify.wait_for,
                    lambda: bool(notify.with_key("WATCHDOG", since=resumed_from)),
                    30.0,
                    gw.alive,
                )
                if not ok:
                    raise Broken("pings did not resume once the writer could commit again")
                return (
                    "pings stopped within WatchdogSec of the writer hanging; STATUS named it; a failed "
                    "commit counted as progress; pings resumed when it committed again"
                )
        finally:
            notify.close()
