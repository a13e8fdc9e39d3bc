"""A Sparkplug host tells a seq skip from lost rows (a real `citynerve run`, killed -9 and started
again, a real Mosquitto): after a power cut the outbox's seq goes on from a bound reserved ahead
(up to 100,000 higher), and every data metric carries `prev_seq`, the seq of the record of its lane
the destination was sent before it, so the chain links over the skip: no gap, as with JSON v1."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from citynerve.hil.faults._time_gateway import GatewayRun, building_and_gateway, short_folder
from citynerve.hil.platform import MosquittoBroker
from tests.uplink.sparkplug_host import DataMetric, SparkplugHost
from tests.uplink.test_sparkplug_present_state import GROUP, HOST_ID, NODE, _destination


def open_gaps(data: list[DataMetric]) -> dict[str, list[tuple[int, int]]]:
    """Per lane, the (contiguous, prev_seq) of every record whose link is not covered: what a
    platform following docs/upstream-contract.md ("Gaps") would report missing."""
    links: dict[str, dict[int, int]] = {"event": {}, "telemetry": {}}
    for d in data:
        lane = "event" if d.name.startswith("Alarms/") else "telemetry"
        links[lane][int(d.props["seq"])] = int(d.props["prev_seq"])
    gaps: dict[str, list[tuple[int, int]]] = {}
    for lane, chain in links.items():
        contiguous, waiting = 0, dict(chain)
        progress = True
        while progress:
            progress = False
            for seq, prev in sorted(waiting.items()):
                if prev <= contiguous:
                    contiguous = max(contiguous, seq)
                    del waiting[seq]
                    progress = True
        gaps[lane] = [(contiguous, prev) for prev in sorted(waiting.values())]
    return gaps


async def test_a_seq_skip_after_a_power_cut_is_no_gap_for_the_host(short_dir: Path) -> None:
    with short_folder(short_dir) as folder:
        broker = MosquittoBroker(workdir=folder)
        broker.start()
        again: GatewayRun | None = None
        extra = _destination(broker, primary_host=False)
        try:
            async with (
                SparkplugHost(broker, group_id=GROUP, node_id=NODE, host_id=HOST_ID) as host,
                building_and_gateway(folder, {}, extra=extra, meter=True) as (
                    _,
                    gw,
                ),
            ):
                view = host.view
                await gw.wait_for("data at the host", lambda: len(view.data) >= 20, 60.0)
                os.kill(gw.proc.pid, signal.SIGKILL)  # a power cut
                gw.proc.wait()
                before = max(int(d.props["seq"]) for d in view.data)
                again = GatewayRun(folder, gw.config.read_text(), {})
                await again.wait_for(
                    "data after the restart",
                    lambda: any(int(d.props["seq"]) > before + 1000 for d in view.data),
                    60.0,
                )
                seen = len(view.data)
                await again.wait_for("more data", lambda: len(view.data) >= seen + 20, 30.0)
        finally:
            if again is not None:
                again.stop()
            broker.close()
    assert all("prev_seq" in d.props for d in view.data), "data metrics without prev_seq"
    assert open_gaps(view.data) == {"event": [], "telemetry": []}
