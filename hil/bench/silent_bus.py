"""Silent part of a bus: how long live smoke detectors wait while others on the same bus are silent.

One Modbus bus (TCP, or RTU on a pty pair) of smoke detectors on real pymodbus servers, polled by the
real `ModbusDriver` and `BusOwner`. Once every detector answers, a power cut silences the first
`--silent` of them; a smoke alarm is then set on the last live detector, and set again once every
silent one is offline. Measured on the monotonic clock, from the batches the owner submits:

- `first_round_gap_s`: the live detectors' longest gap between two answered polls from the cut until
  every silent detector has failed a poll (each costs one timeout before the owner can know it is
  silent: nothing tells a silent detector from a live one before it is asked);
- `failing_gap_s`, `offline_gap_s`: the same once every silent detector has failed a poll, while
  they are failing (not offline yet), and after they are all offline (probed on their backoff);
- `smoke_failing_s`, `smoke_offline_s`: smoke set on a live detector -> the owner's batch saying so;
- `offline_s`: the cut -> every silent detector offline (`device_offline` raised);
- `false_offline`: live detectors that went offline (must be none).

The reviewer's scenario is the default (120 detectors every 1 s, 60 silent, the bus defaults:
timeout_s 1, retries 1, offline_after 3, backoff 5..300 s). It uses only the owner's public API, so
one checkout's script can measure another's gateway (run it with that checkout's interpreter):

    python -m citynerve.hil.bench.silent_bus [--transport rtu] [--json]
    /work/main/.venv/bin/python hil/bench/silent_bus.py --json   # the code of /work/main
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import random
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from citynerve.drivers.modbus.config import ModbusDeviceConfig, ModbusRtuBusConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import Event, EventState, SampleBatch
from citynerve.gateway.bus import OFFLINE_KIND, BusOwner
from citynerve.hil.sim.modbus import (
    PROFILES_DIR,
    PtyLink,
    SimDevice,
    SimEndpoint,
    SimProfile,
    serve_rtu,
    serve_tcp,
)

PROFILE = "modbus-smoke-detector"
LOCATION = {"address_code": "310106013007", "building": "7"}


@dataclass(frozen=True, slots=True)
class SilentBusCase:
    """One bus of `live + silent` detectors (units 1..), the first `silent` of them cut."""

    live: int = 60
    silent: int = 60
    interval_s: float = 1.0
    timeout_s: float = 1.0
    retries: int = 1
    offline_after: int = 3
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 300.0
    transport: str = "tcp"  # "tcp" or "rtu" (a pty pair, 19200 baud framing)
    offline_limit_s: float = 900.0  # give up waiting for every silent detector offline after this
    probe_window_s: float = 30.0  # how long to watch once every silent detector is offline
    seed: int = 1


@dataclass(slots=True)
class SilentBusResult:
    first_round_s: float = math.inf
    first_round_gap_s: float = math.inf
    failing_gap_s: float = math.inf
    offline_gap_s: float = math.inf
    smoke_failing_s: float = math.inf
    smoke_offline_s: float = math.inf
    offline_s: float = math.inf
    offline_events: int = 0
    false_offline: list[str] = field(default_factory=list)


class _Recorder:
    """The owner's sink: monotonic time of every answered poll per device, smoke readings, events."""

    def __init__(self) -> None:
        self.polls: dict[str, list[float]] = {}
        self.smoke: dict[str, float] = {}  # device -> time of its first batch with smoke_alarm True
        self.events: list[Event] = []

    def submit(self, batch: SampleBatch) -> None:
        now = time.monotonic()
        self.polls.setdefault(batch.device_id, []).append(now)
        if any(s.point == "smoke_alarm" and s.value is True for s in batch.samples):
            self.smoke.setdefault(batch.device_id, now)

    def event(self, event: Event) -> None:
        self.events.append(event)

    def mark_offline(self, device_id: str, ts: float) -> None:
        pass

    def longest_gap(self, devices: list[str], start: float, end: float) -> float:
        """Longest stretch within [start, end] in which one of `devices` had no answered poll."""
        longest = 0.0
        for device_id in devices:
            times = [t for t in self.polls.get(device_id, []) if start < t < end]
            edges = [start, *times, end]
            longest = max(longest, *(b - a for a, b in itertools.pairwise(edges)))
        return longest


def _devices(case: SilentBusCase) -> list[ModbusDeviceConfig]:
    data = tomllib.loads((PROFILES_DIR / f"{PROFILE}.toml").read_text())
    return [
        ModbusDeviceConfig.model_validate(
            {
                "id": f"sd-{unit:03d}",
                "bus": "b1",
                "profile": PROFILE,
                "address": unit,
                "location": LOCATION,
                "poll_interval_s": case.interval_s,
                "points": data["points"],
                **data.get("device", {}),
            }
        )
        for unit in range(1, case.live + case.silent + 1)
    ]


@contextlib.asynccontextmanager
async def _bus(case: SilentBusCase, sims: list[SimDevice]) -> AsyncIterator[tuple[Any, SimEndpoint]]:
    """The bus config and the endpoint serving `sims`: TCP, or RTU behind a pty pair."""
    common: dict[str, Any] = {
        "id": "b1",
        "timeout_s": case.timeout_s,
        "retries": case.retries,
        "offline_after": case.offline_after,
        "backoff_initial_s": case.backoff_initial_s,
        "backoff_max_s": case.backoff_max_s,
    }
    if case.transport == "tcp":
        endpoint = await serve_tcp(sims)
        try:
            yield ModbusTcpBusConfig(host=endpoint.host, port=endpoint.port, **common), endpoint
        finally:
            await endpoint.close()
        return
    async with PtyLink() as link:
        endpoint = await serve_rtu(sims, url=link.device_port, baudrate=19200)
        try:
            yield ModbusRtuBusConfig(port=link.gateway_port, baudrate=19200, **common), endpoint
        finally:
            await endpoint.close()


async def _until(predicate: Callable[[], bool], limit_s: float) -> float:
    """Monotonic time `predicate` first held (checked every 10 ms), inf after `limit_s`."""
    end = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > end:
            return math.inf
        await asyncio.sleep(0.01)
    return time.monotonic()


async def run_case(case: SilentBusCase) -> SilentBusResult:
    """Run the scenario once; every figure is inf when its moment did not come within its limit."""
    result = SilentBusResult()
    profile = SimProfile.load(PROFILE)
    devices = _devices(case)
    sims = [SimDevice(profile, d.address, seed=d.address) for d in devices]
    silent = [d.id for d in devices[: case.silent]]
    live = [d.id for d in devices[case.silent :]]
    alarmed = sims[-1]
    recorder = _Recorder()
    async with _bus(case, sims) as (bus, endpoint):
        owner = BusOwner(bus, devices, ModbusDriver(bus, devices), recorder, rng=random.Random(case.seed))
        task = asyncio.create_task(owner.run(), name="bus[b1]")
        try:
            if await _until(lambda: all(h.online for h in owner.health.values()), 60.0) == math.inf:
                raise RuntimeError("not every detector answered before the cut")
            cut = time.monotonic()
            for sim in sims[: case.silent]:
                endpoint.silence(sim.unit)

            def failed_a_poll() -> bool:
                return all(owner.health[d].errors > 0 for d in silent)

            known = await _until(failed_a_poll, case.offline_limit_s)
            result.first_round_s = known - cut
            result.first_round_gap_s = recorder.longest_gap(live, cut, known)
            if known == math.inf:
                return result
            set_at = time.monotonic()
            alarmed.state.smoke = True
            seen = await _until(lambda: live[-1] in recorder.smoke, 120.0)
            result.smoke_failing_s = seen - set_at
            alarmed.state.smoke = False
            all_off = await _until(
                lambda: all(owner.health[d].online is False for d in silent), case.offline_limit_s
            )
            result.offline_s = all_off - cut
            result.failing_gap_s = recorder.longest_gap(live, known, min(all_off, time.monotonic()))
            if all_off == math.inf:
                return result
            await asyncio.sleep(max(2.0, case.interval_s * 2))  # the clear is read
            recorder.smoke.pop(live[-1], None)
            watch_from = time.monotonic()
            alarmed.state.smoke = True
            set_at = time.monotonic()
            seen = await _until(lambda: live[-1] in recorder.smoke, 120.0)
            result.smoke_offline_s = seen - set_at
            alarmed.state.smoke = False
            await asyncio.sleep(max(0.0, watch_from + case.probe_window_s - time.monotonic()))
            result.offline_gap_s = recorder.longest_gap(live, watch_from, time.monotonic())
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    raised = [e for e in recorder.events if e.kind == OFFLINE_KIND and e.state is EventState.RAISED]
    result.offline_events = len(raised)
    result.false_offline = sorted({e.device_id for e in raised} - set(silent))
    return result


def _rounded(result: SilentBusResult) -> dict[str, Any]:
    return {
        k: round(v, 2) if isinstance(v, float) and math.isfinite(v) else v for k, v in asdict(result).items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = SilentBusCase()
    parser.add_argument("--live", type=int, default=defaults.live)
    parser.add_argument("--silent", type=int, default=defaults.silent)
    parser.add_argument("--interval", type=float, default=defaults.interval_s)
    parser.add_argument("--timeout", type=float, default=defaults.timeout_s)
    parser.add_argument("--retries", type=int, default=defaults.retries)
    parser.add_argument("--offline-after", type=int, default=defaults.offline_after)
    backoff = (defaults.backoff_initial_s, defaults.backoff_max_s)
    parser.add_argument("--backoff", type=float, nargs=2, default=backoff, help="initial and max, s")
    parser.add_argument("--transport", choices=("tcp", "rtu"), default=defaults.transport)
    parser.add_argument("--offline-limit", type=float, default=defaults.offline_limit_s)
    parser.add_argument("--probe-window", type=float, default=defaults.probe_window_s)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    case = SilentBusCase(
        live=args.live,
        silent=args.silent,
        interval_s=args.interval,
        timeout_s=args.timeout,
        retries=args.retries,
        offline_after=args.offline_after,
        backoff_initial_s=args.backoff[0],
        backoff_max_s=args.backoff[1],
        transport=args.transport,
        offline_limit_s=args.offline_limit,
        probe_window_s=args.probe_window,
    )
    result = _rounded(asyncio.run(run_case(case)))
    if args.json:
        print(json.dumps({"case": asdict(case), "result": result}))
        return
    for key, value in result.items():
        print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
