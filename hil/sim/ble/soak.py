"""Soak: many simulated manhole nodes on one virtual radio, heard by one BTHome driver.

    .venv/bin/python -m citynerve.hil.sim.ble.soak --nodes 200 --seconds 600 [--json]

Every node sends heartbeats and, now and then, a tilt alarm and its clearing; the run checks that
every raise and clear reached the sink exactly once, that no advert was refused, and reports the
adverts heard, duplicates and drops. A short version runs in tests/ble (`run_soak(20, 3)`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from dataclasses import asdict, dataclass
from typing import Any

from citynerve.drivers.ble import Backend, BleBusConfig
from citynerve.drivers.bthome import BTHomeDevice, BTHomeDriver
from citynerve.gateway.api import Event, EventState, SampleBatch
from citynerve.hil.sim.ble.advertiser import VirtualRadio
from citynerve.hil.sim.ble.nodes import ManholeCoverNode


@dataclass(slots=True)
class SoakResult:
    nodes: int
    seconds: float
    batches: int
    raised: int
    cleared: int
    expected_raised: int
    expected_cleared: int
    rejected: int
    duplicates: int
    dropped: int

    @property
    def ok(self) -> bool:
        return (
            self.rejected == 0
            and self.dropped == 0
            and (self.raised, self.cleared) == (self.expected_raised, self.expected_cleared)
        )


class _Sink:
    def __init__(self) -> None:
        self.batches = 0
        self.events: list[Event] = []

    def submit(self, batch: SampleBatch) -> None:
        self.batches += 1

    def event(self, event: Event) -> None:
        self.events.append(event)


def _device(i: int, mac: str, key: bytes) -> BTHomeDevice:
    return BTHomeDevice.model_validate(
        {
            "id": f"mh-{i:04d}",
            "bus": "ble0",
            "profile": "bthome-manhole-cover",
            "address": mac,
            "key": key.hex(),
            "location": {"address_code": "320508001"},
            "points": {
                "tilt": {"name": "tilt", "object": "rotation"},
                "tilt_alarm": {"name": "tilt_alarm", "object": "opening", "event_kind": "manhole_tilt"},
            },
        }
    )


async def run_soak(nodes: int, seconds: float, *, seed: int = 1) -> SoakResult:
    rng = random.Random(seed)
    sink = _Sink()
    expected = {"raised": 0, "cleared": 0}
    with VirtualRadio(f"soak-{seed}") as radio:
        sims: list[ManholeCoverNode] = []
        devices = []
        for i in range(nodes):
            mac = f"A4:C1:38:{i >> 16 & 0xFF:02X}:{i >> 8 & 0xFF:02X}:{i & 0xFF:02X}"
            key = rng.randbytes(16)
            sims.append(ManholeCoverNode(radio, mac, key=key))
            devices.append(_device(i, mac, key))
        bus = BleBusConfig(id="ble0", protocol="bthome", backend=Backend.BUMBLE, transport=radio.transport)
        driver = BTHomeDriver(bus, devices)
        await driver.open()
        listen = asyncio.create_task(driver.listen(sink), name="soak.listen")

        async def life(node: ManholeCoverNode) -> None:
            lifted = False
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            await asyncio.sleep(rng.random() * 0.5)  # staggered start, as real nodes are
            while loop.time() < end:
                if rng.random() < 0.2:
                    lifted = not lifted
                    expected["raised" if lifted else "cleared"] += 1
                await node.state(tilt_deg=40.0 if lifted else 1.0, tilt_alarm=lifted)
                await asyncio.sleep(0.2 + rng.random() * 0.3)
            if lifted:  # put every cover back, so every raise has its clear
                expected["cleared"] += 1
                await node.state(tilt_deg=1.0, tilt_alarm=False)

        try:
            await asyncio.gather(*(life(n) for n in sims))
            await asyncio.sleep(0.5)
        finally:
            listen.cancel()
            await asyncio.gather(listen, return_exceptions=True)
            stats = driver.stats()
            await driver.close()
            for n in sims:
                await n.close()
    return SoakResult(
        nodes=nodes,
        seconds=seconds,
        batches=sink.batches,
        raised=sum(1 for e in sink.events if e.state is EventState.RAISED),
        cleared=sum(1 for e in sink.events if e.state is EventState.CLEARED),
        expected_raised=expected["raised"],
        expected_cleared=expected["cleared"],
        rejected=sum(s.rejected_total for s in stats.values()),
        duplicates=sum(s.duplicates for s in stats.values()),
        dropped=driver.dropped_adverts,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description="Soak many simulated manhole nodes against one driver.")
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    result = asyncio.run(run_soak(a.nodes, a.seconds, seed=a.seed))
    out: dict[str, Any] = {**asdict(result), "ok": result.ok}
    print(json.dumps(out) if a.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    raise SystemExit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
