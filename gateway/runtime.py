"""The `citynerve run` service: wires config, bus owners, pipeline, rules, outbox, uplink and control.

All long-lived work runs as named tasks in one TaskGroup. Stopping (SIGTERM, SIGINT) cancels the
bus owners first, then lets the outbox writer commit what it holds, so nothing read is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from citynerve.gateway.alarms import ActiveAlarms
from citynerve.gateway.api import (
    SYSTEM_CLOCK,
    ChannelError,
    Clock,
    Event,
    PermanentError,
    Reading,
    SteadyWall,
    Value,
    WriteRejectedError,
    stop_task,
)
from citynerve.gateway.bus import BusOwner
from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.control import ControlServer
from citynerve.gateway.control.handlers import control_handlers
from citynerve.gateway.credentials import Credentials
from citynerve.gateway.fleet import HostControl, LogLevel, LogRing
from citynerve.gateway.heap import settle_heap
from citynerve.gateway.inventory import device_inventory, iter_device_inventory
from citynerve.gateway.operator import OperatorControls
from citynerve.gateway.pipeline import NoRules, Pipeline
from citynerve.gateway.reload import reconcile_alarms, reload_config, reload_logged
from citynerve.gateway.reload_plan import secret_digests
from citynerve.gateway.runlock import GatewayLockedError, run_lock
from citynerve.gateway.service.notify import Notifier, Watchdog, WriterProgress
from citynerve.gateway.status import brief_status, full_status, service_status
from citynerve.gateway.store import BLOCK_READINGS, AsyncOutbox, OutboxWriter
from citynerve.gateway.timesync import ClockSync, UnsyncedMarks
from citynerve.gateway.uplink.certexpiry import EXPIRY_KIND
from citynerve.gateway.uplink.commands import PointInfo
from citynerve.gateway.uplinks import command_destination, make_uplinks, restart_uplinks
from citynerve.gateway.wiring import BusSupervisor, BusWiring, RuledBusSink

if TYPE_CHECKING:
    from citynerve.gateway.release.remote import RemoteUpdate
    from citynerve.gateway.remoteconfig import RemoteConfig
    from citynerve.gateway.rules import PersistentRuleEngine
    from citynerve.gateway.uplink import Uplink
    from citynerve.gateway.uplink.encoding import CommandResult
    from citynerve.gateway.uplink.sparkplug import SparkplugUplink
    from citynerve.gateway.web import StatusServer

__all__ = ["Gateway", "GatewayLockedError", "run_lock"]  # the run lock lives in gateway/runlock.py

log = logging.getLogger("citynerve.gateway")


class Gateway:
    """One running gateway. Also the target of platform commands and local actions."""

    def __init__(self, config: GatewayConfig, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.config = config
        self.clock = clock
        self.started = clock.wall()
        self._started_mono = clock.monotonic()
        self.clock_sync = ClockSync(config.clock.sync, clock, config.clock.sync_file)
        self.steady = SteadyWall(clock)  # the rule engine's time: see RuleEngine
        self._rules_now: Callable[[], float] = lambda: self.steady.now()[0]
        self.notifier = Notifier()
        self._writer_progress: WriterProgress | None = None
        self.marks: UnsyncedMarks | None = None
        self.buses: dict[str, BusSupervisor] = {}
        self.alarms = ActiveAlarms()  # the one registry every status view reads
        self.pipeline: Pipeline | None = None
        self.outbox: AsyncOutbox | None = None
        self.writer: OutboxWriter | None = None
        self.rules: PersistentRuleEngine | None = None
        self.uplink: Uplink | None = None  # the command destination's (commands, platform clock)
        self.uplinks: list[Uplink | SparkplugUplink] = []  # one per destination ([[upstream]])
        self.wiring: BusWiring | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._owner_tasks: dict[str, asyncio.Task[None]] = {}
        self._devices = {d.id: d for d in config.devices}
        self._rules_devices = config.devices  # what the rule engine is bound to (reload.rebind_rules)
        self._reload_lock = asyncio.Lock()  # one reload at a time (gateway/reload.py)
        self._reload_asked = ""  # a SIGHUP before the task group ran: reloaded once it does
        self.restart_pending: list[str] = []  # the last reload's restart_needed_for: in status
        self.config_at_start: dict[str, str] = {}  # version and sha256 of the config at start
        self._reloaded: GatewayConfig | None = None  # the file as the last reload read it
        self._secrets = secret_digests(config)  # key files as read at start: a reload compares them
        self.operator: OperatorControls | None = None
        self.credentials: Credentials | None = None  # keys and certificates (with an [upstream])
        self.log_ring = LogRing()
        self.log_level = LogLevel()
        self.host = HostControl()  # tests put a subclass here: a test never reboots the machine
        self.restart_requested = False
        self._stop: asyncio.Event | None = None
        self.remote_config: RemoteConfig | None = None
        self._uplink_tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()  # config apply and its health check
        self.remote_update: RemoteUpdate | None = None

    @property
    def owners(self) -> dict[str, BusOwner]:
        """The running owner of each enabled bus (a new object after a crash or a reload)."""
        return {bus_id: sup.owner for bus_id, sup in self.buses.items()}

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set. Raises GatewayLockedError, StoreError, ChannelError at start."""
        cfg = self.config
        db = Path(cfg.store.path)
        db.parent.mkdir(parents=True, exist_ok=True)
        with run_lock(db):
            # Telemetry blocks as big as the uplink's messages: a drain then sends whole blocks.
            per_message = cfg.upstream.max_batch_readings if cfg.upstream is not None else BLOCK_READINGS
            async with AsyncOutbox.from_config(cfg.store, block_readings=per_message) as outbox:
                self.outbox = outbox
                self.writer = OutboxWriter(
                    outbox,
                    max_latency_s=cfg.store.commit_interval_ms / 1000,
                    max_rows=cfg.store.commit_max_rows,
                )
                await self._restore_alarms(outbox)
                self.rules = await self._make_rules(outbox)
                self.marks = UnsyncedMarks(self.writer, self.clock_sync)
                self.pipeline = Pipeline(
                    self._devices, self.marks, self.rules or NoRules(), alarms=self.alarms
                )
                reconcile_alarms(self)
                await self._make_operator(outbox)
                if (primary := command_destination(cfg)) is not None:
                    from citynerve.gateway.remoteconfig import change_waiting

                    self.credentials = Credentials(
                        primary,
                        gateway_id=cfg.gateway.id,
                        state=outbox,
                        directory=db.parent / "credentials",
                        events=self._event,
                        config_waiting=lambda: self.remote_config is not None and self.remote_config.waiting,
                    )
                    await self.credentials.load(settle=not change_waiting(cfg.source))
                self._adopt_expiry_alarms()
                self._make_remote_config()
                self.wiring = BusWiring(
                    config=cfg,
                    sink=RuledBusSink(self.pipeline, self.rules),
                    state=outbox,
                    alarms=self.alarms,
                    clock=self.clock,
                )
                self.buses = {bus.id: self._supervisor(bus.id) for bus in cfg.buses if bus.enabled}
                log.info(
                    "gateway %s starting: %d buses, %d devices, store %s",
                    cfg.gateway.id,
                    len(self.buses),
                    len(self._devices),
                    db,
                )
                await self._run_tasks(stop)
                await self._save_state(outbox)
        log.info("gateway %s stopped", cfg.gateway.id)

    async def _restore_alarms(self, outbox: AsyncOutbox) -> None:
        try:
            await self.alarms.load(outbox)
        except Exception:  # a damaged snapshot costs the list of old alarms, never the gateway
            log.exception("cannot restore the active alarms")
            self.alarms.unreadable = True

    def _adopt_expiry_alarms(self) -> None:
        """Certificate expiry alarms restored from the last run: the certificate watch judges them
        at its first check (a certificate replaced while the gateway was stopped clears its alarm);
        with no uplink left nothing would, so they clear now."""
        assert self.pipeline is not None
        gw_id = self.config.gateway.id
        restored = [a for a in self.alarms.active() if a.device_id == gw_id and a.kind == EXPIRY_KIND]
        if self.credentials is not None:
            self.credentials.adopt(restored)
            return
        for a in restored:
            self.pipeline.event(a.cleared("no uplink certificates any more", self.clock.wall()))

    def _supervisor(self, bus_id: str) -> BusSupervisor:
        return BusSupervisor(bus_id, self._current_wiring, self._event)

    def _current_wiring(self) -> BusWiring:
        assert self.wiring is not None
        return self.wiring

    async def _make_operator(self, outbox: AsyncOutbox) -> None:
        """Operator flags (away, maintenance, overrides), restored and applied before buses start."""
        assert self.pipeline is not None
        self.operator = OperatorControls(
            store=outbox,
            alarms=self.alarms,
            events=self._event,
            devices=lambda: self._devices,
            rules=lambda: self.rules,
            action_ids=lambda: {a.id for a in self.config.rules.actions} if self.config.rules else set(),
        )
        self.pipeline.mark_event = self.operator.mark
        try:
            n = await self.operator.load()
        except Exception:  # a damaged record costs the flags, never the gateway
            log.exception("cannot restore the operator flags")
            return
        if n:
            log.warning("%d operator flags in force (away, maintenance, overrides)", n)

    async def _run_tasks(self, stop: asyncio.Event) -> None:
        assert self.writer is not None and self.outbox is not None
        self._stop = stop
        logging.getLogger().addHandler(self.log_ring)
        writer_task = asyncio.create_task(self.writer.run(), name="outbox.writer")
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for bus_id in self.buses:
                    self._start_owner(bus_id)
                others = [tg.create_task(self._tick(), name="rules.tick")]
                others.append(tg.create_task(self._keep_alarms(), name="alarms.keeper"))
                control = ControlServer(Path(self.config.control.socket), control_handlers(self))
                others.append(tg.create_task(control.run(), name="control"))
                for uplink in await make_uplinks(self, self.outbox):
                    self._uplink_tasks.append(
                        tg.create_task(uplink.run(), name=f"uplink.{uplink.destination}")
                    )
                if self.credentials is not None:
                    others.append(tg.create_task(self.credentials.run(), name="credentials"))
                if self.remote_update is not None:
                    others.append(tg.create_task(self.remote_update.run(), name="update"))
                web = self._make_web()
                if web is not None:
                    others.append(tg.create_task(web.run(), name="web"))
                watchdog = Watchdog(
                    self.notifier, self._progress, status=self._service_status, clock=self.clock
                )
                others.append(tg.create_task(watchdog.run(), name="service.watchdog"))
                # The outbox is open and every bus owner started (a bus whose channel is down keeps
                # retrying on its own): ready.
                self.notifier.send(READY="1", STATUS=self._service_status())
                settle_heap()  # what start-up built lives on: later collections skip it
                if self.remote_config is not None:  # a config change pending across a restart
                    self._spawn(self.remote_config.resume(), "config.resume")
                if self._reload_asked:  # a SIGHUP while starting
                    self.reload_soon(self._reload_asked)
                await stop.wait()
                log.info("stopping")
                self.notifier.send(STOPPING="1", STATUS="stopping: committing the outbox")
                running = [*self._owner_tasks.values(), *others, *self._side_tasks, *self._uplink_tasks]
                for t in running:
                    t.cancel()
                # Cancel again while a task is still running (Python 3.11's wait_for, used inside
                # aiomqtt, can swallow a cancel that races with a result), and say what holds the
                # stop up, so a slow shutdown can be diagnosed from the log.
                pending = set(running)
                rounds = 0
                while pending:
                    _, pending = await asyncio.wait(pending, timeout=3.0)
                    rounds += 1
                    for t in pending:
                        t.cancel()
                    if pending and rounds % 3 == 0:
                        log.warning("still stopping: %s", ", ".join(sorted(t.get_name() for t in pending)))
        finally:
            logging.getLogger().removeHandler(self.log_ring)
            self.log_level.revert()
            # Bus owners are done: let the writer commit everything it holds, then stop it.
            with contextlib.suppress(Exception):
                await self.writer.flush()
            writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer_task

    def _progress(self) -> dict[str, Callable[[], float]]:
        """What the service watchdog checks: the outbox writer and every bus owner (the event loop
        is checked by the watchdog's own pings running on it)."""
        assert self.writer is not None
        if self._writer_progress is None:
            self._writer_progress = WriterProgress(self.writer, self.clock)
        parts: dict[str, Callable[[], float]] = {"outbox.writer": self._writer_progress}
        for bus_id, owner in self.owners.items():
            parts[f"bus[{bus_id}]"] = owner.progress_at
        return parts

    def _start_owner(self, bus_id: str) -> None:
        """The owner task of `bus_id`: never a second one beside a running one (it would be orphaned,
        still polling, and hold the stop up), and none once the gateway is stopping."""
        assert self._tg is not None
        running = self._owner_tasks.pop(bus_id, None)
        if running is not None and not running.done():
            log.error("bus %s: an owner was still running when a new one started: cancelled", bus_id)
            running.cancel()
        if self._stop is not None and self._stop.is_set():
            return
        self._owner_tasks[bus_id] = self._tg.create_task(
            self.buses[bus_id].run(), name=f"bus[{bus_id}].owner"
        )

    async def _stop_owner(self, bus_id: str) -> None:
        task = self._owner_tasks.pop(bus_id, None)
        self.buses.pop(bus_id, None)
        if task is not None:
            await stop_task(task)

    async def reload(self, why: str = "") -> dict[str, Any]:
        """Re-read the config file and apply bus and device changes without a restart, one reload
        at a time (gateway/reload.py). `why`: who asked, for the log (`SIGHUP`).

        Buses whose settings or devices changed are restarted; the others keep polling; the rule
        engine takes changed devices. The outbox and the writer are untouched, so nothing buffered
        is lost. Changes to other sections (store, upstream, rules, web) need a restart and are
        reported as such (and in status: `restart_pending`); until then `self.config` keeps those
        sections as they run, so status, later reloads and remote config changes see and compare
        against what is in effect, not what waits for the restart. Raises ConfigError (logged).
        """
        async with self._reload_lock:
            return await reload_config(self, why)

    def reload_soon(self, why: str) -> None:
        """A reload asked for by a signal (SIGHUP): run as a task; its outcome goes to the log."""
        if self._stop is not None and self._stop.is_set():
            log.warning("config reload (%s) ignored: the gateway is stopping", why)
        elif self._tg is None:  # still starting: the reload runs once the buses have started
            self._reload_asked = why
        else:
            self._spawn(reload_logged(self, why), f"config.reload({why})")

    async def _make_rules(self, outbox: AsyncOutbox) -> PersistentRuleEngine | None:
        if self.config.rules is None:
            return None
        from citynerve.gateway.rules import build_engine

        engine = await build_engine(
            self.config.rules,
            self._devices,
            actions=self,
            state=outbox,
            events=self._event,
            steady=self.steady,
        )
        self._rules_now = engine.now
        return engine

    async def _save_state(self, outbox: AsyncOutbox) -> None:
        """At stop: the rule engine's snapshot and the active alarms (each failure logged)."""
        if self.rules is not None:
            try:
                await self.rules.save()
            except Exception:
                log.exception("cannot save the rules state")
        try:
            await self.alarms.save(outbox)
        except Exception:
            log.exception("cannot save the active alarms")

    # -- remote configuration (citynerve.gateway.remoteconfig.Reconfigurable) ----------------------

    def _make_remote_config(self) -> None:
        from citynerve.gateway.remoteconfig import RemoteConfig

        creds = self.credentials  # one change at a time: a config change or a TLS pair on probation
        self.remote_config = RemoteConfig(
            self,
            events=self._event,
            spawn=self._spawn,
            clock=self.clock,
            rotation_waiting=creds.rotation_waiting if creds is not None else lambda: None,
        )
        self.config_at_start = dict(self.remote_config.current)  # what `restart_pending` sections run

    def _spawn(self, coro: Any, name: str) -> None:
        """A task in the gateway's task group that stop cancels too."""
        assert self._tg is not None
        task = self._tg.create_task(coro, name=name)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def restart_uplink(self) -> None:
        """New uplinks for the destinations of the reloaded config; the old ones say goodbye."""
        await restart_uplinks(self)

    async def config_confirmed(self) -> None:
        """A remote change passed its health check: a rotated TLS pair it replaced goes now."""
        if self.credentials is not None:
            await self.credentials.settle()

    async def publish_result(self, result: CommandResult, destination: str | None = None) -> bool:
        """On the JSON v1 uplink of `destination` (where the command came from), else on `uplink`."""
        from citynerve.gateway.uplink import Uplink

        found = (u for u in self.uplinks if isinstance(u, Uplink) and u.destination == destination)
        uplink = next(found, self.uplink)
        return await uplink.publish_result(result) if uplink is not None else False

    def _make_web(self) -> StatusServer | None:
        if self.config.web is None or not self.config.web.enabled:
            return None
        from citynerve.gateway.web import StatusServer

        return StatusServer(self.config.web, self)

    def _event(self, event: Event) -> None:
        """Events from rules and local actions enter the outbox like bus events."""
        if self.pipeline is not None:
            self.pipeline.event(event)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            # Synchronised just now (NTP stepped a box without RTC to the real time): deadlines taken
            # at start from stored wall-clock ends are taken again (operator windows, key overlaps).
            synced_now = self.clock_sync.check() and self.clock_sync.synced is True
            if synced_now and self.credentials is not None:
                self.credentials.rearm()
            if self.pipeline is not None:
                # The rules' own time (monotonic underneath): a step of the wall clock is no time passing.
                self.pipeline.tick(self._rules_now())  # never raises: a rule bug is logged and counted
            rearmed = synced_now and self.operator is not None and self.operator.rearm()
            if self.operator is not None and (self.operator.expire() or rearmed):
                try:
                    await self.operator.save()
                except Exception:
                    log.exception("cannot save the operator flags")

    async def _keep_alarms(self) -> None:
        """Save the active alarms when they change, in its own task: a stalled disk never holds up
        the rules' tick."""
        save_failing = False
        while True:
            await asyncio.sleep(1.0)
            if self.alarms.dirty and self.outbox is not None:
                try:  # an alarm raised is durable within about a second, so a restart keeps it
                    await self.alarms.save(self.outbox)
                except Exception:
                    if not save_failing:  # once per failure spell (a full disk fails every second)
                        log.exception("cannot save the active alarms (retrying every second)")
                    save_failing = True
                else:
                    if save_failing:
                        log.warning("active alarms saved again")
                    save_failing = False

    # -- commands and local actions (CommandTarget / ActionTarget) -------------------------------

    def _owner_of(self, device_id: str) -> BusOwner:
        device = self._devices.get(device_id)
        if device is None:
            raise PermanentError(f"no device {device_id!r}")
        owner = self.owners.get(device.bus)
        if owner is None:
            raise ChannelError(device.bus, "bus is disabled")
        return owner

    def point_info(self, device_id: str, point: str) -> PointInfo | None:
        """For out-of-profile checks of platform commands: None for an unknown device."""
        device = self._devices.get(device_id)
        if device is None:
            return None
        if point not in device.points:
            return PointInfo(exists=False)
        cfg = device.points[point]
        return PointInfo(
            exists=True, writable=cfg.writable, domain=cfg.value_domain() if cfg.writable else None
        )

    def bus_ids(self) -> list[str]:
        return list(self.owners)

    async def read_point(self, device_id: str, point: str) -> Reading:
        await self._owner_of(device_id).read_now(device_id, point)
        assert self.pipeline is not None
        reading = self.pipeline.latest(device_id).get(point)
        if reading is None:
            raise PermanentError(f"device {device_id} returned no value for {point}")
        return reading

    async def write_point(self, device_id: str, point: str, value: Value) -> None:
        info = self.point_info(device_id, point)
        if info is None or not info.exists:
            raise WriteRejectedError(device_id, point, "no such point")
        if not info.writable:
            raise WriteRejectedError(device_id, point, "point is not writable")
        await self._owner_of(device_id).write(device_id, point, value)

    async def restart_bus(self, bus_id: str) -> None:
        sup = self.buses.get(bus_id)
        if sup is None:
            raise PermanentError(f"no running bus {bus_id!r}")
        await sup.owner.restart()

    def inventory(self) -> list[dict[str, Any]]:
        return device_inventory(self.config)

    def inventory_devices(self) -> Iterator[dict[str, Any]]:
        """The inventory one device at a time (what the uplink renders and publishes)."""
        return iter_device_inventory(self.config)

    # -- diagnostics (citynerve.gateway.fleet.Diagnosable) --------------------------------------------------

    async def store_stats(self) -> dict[str, Any]:
        return (await self.outbox.stats()).to_dict() if self.outbox else {}

    def bus_stats(self) -> list[dict[str, Any]]:
        return [sup.snapshot() for sup in self.buses.values()]

    def uplink_state(self) -> dict[str, Any] | None:
        """The command destination's uplink state, else (no JSON v1 destination taking commands,
        e.g. a gateway whose only destination is Sparkplug B) the first destination's, with every
        destination's under `destinations`; None when there is no destination at all."""
        first = self.uplink if self.uplink is not None else next(iter(self.uplinks), None)
        if first is None:
            return None
        state = first.snapshot().to_dict()
        state["destinations"] = self.destination_states()
        return state

    def destination_states(self) -> dict[str, dict[str, Any]]:
        """Each destination's uplink state (connection, positions, counts), by destination id."""
        return {u.destination: u.snapshot().to_dict() for u in self.uplinks}

    async def uplink_probe(self, destination: str | None = None) -> list[dict[str, Any]]:
        """Every broker of `destination` (a command's: it came through it), else of the command
        destination, probed with what its uplink connects with (a rotated TLS pair)."""
        from citynerve.gateway.uplink.probe import probe_uplink

        uplink = next((u for u in self.uplinks if u.destination == destination), self.uplink)
        config = uplink.config if uplink is not None else self.config.upstream
        if config is None:
            return []
        reports = await probe_uplink(config, gateway_id=self.config.gateway.id)
        return [r.to_dict() for r in reports]

    def request_restart(self, delay_s: float) -> None:
        """Stop after `delay_s` and exit with RESTART_EXIT_CODE (the service manager starts us again)."""
        self.restart_requested = True
        if self._stop is not None:
            asyncio.get_running_loop().call_later(delay_s, self._stop.set)

    # -- status ----------------------------------------------------------------------------------

    def brief_status(self) -> dict[str, Any]:
        """Small figures for /healthz and the platform's retained status message."""
        return brief_status(self)

    async def status(self) -> dict[str, Any]:
        """Everything `citynerve status` shows (gateway/status.py)."""
        return await full_status(self)

    def _service_status(self) -> str:
        return service_status(self)
