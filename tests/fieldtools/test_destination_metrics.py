"""/metrics of a real running gateway with two destinations (issue 16 D1): the city's broker is up,
the district's is down. The outbox the gateway opens already holds what the size cap dropped while
the district was away (written by the store itself, as an earlier run would have): each
destination's connection, backlog and dropped rows in /metrics are the gateway's own figures."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

from citynerve.gateway.api import Reading
from citynerve.gateway.config import load_config
from citynerve.gateway.store import Lane, Outbox
from citynerve.gateway.web import StatusServer, WebConfig
from citynerve.hil.platform import MosquittoBroker
from citynerve.hil.sim.modbus import ModbusBuilding

from .conftest import gateway_toml, run_gateway, wait_for


def _reading(i: int) -> Reading:
    # values that do not compress away: a 64 KiB outbox overflows within a few thousand readings
    return Reading(f"meter-{i % 97}", f"p{i % 13}", i * 1.000_123_7, "kWh", 1_780_000_000.0 + i)


def _district_was_away(path: Path) -> dict[str, Any]:
    """An earlier run: the city got every row, the district none; the cap dropped some of them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with Outbox(path, max_bytes=64 * 1024, synchronous="normal") as ob:
        ob.set_destinations({"city": tuple(Lane), "district": tuple(Lane)})
        for batch in range(12):
            _, last = ob.append([_reading(batch * 500 + i) for i in range(500)], [])
            ob.ack(Lane.TELEMETRY, last, destination="city")
        return ob.destination_stats()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()  # type: ignore[no-any-return]


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    (value,) = re.findall(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.MULTILINE)
    return float(value)


async def test_metrics_show_each_destination_of_a_running_gateway(
    short_dir: Path, building: ModbusBuilding
) -> None:
    broker = MosquittoBroker(workdir=short_dir)
    broker.start()
    try:
        host, port = building.endpoint
        path = short_dir / "gateway.toml"
        path.write_text(
            gateway_toml(host, port)
            + f"""
[[upstream]]
id = "city"
brokers = ["{broker.url}"]

[[upstream]]
id = "district"
brokers = ["mqtt://127.0.0.1:9"]
"""
        )
        config = load_config(path)
        before = _district_was_away(Path(config.store.path))
        lost = before["district"]["dropped"]["telemetry"]
        assert lost > 0 and before["city"]["dropped"]["telemetry"] == 0
        async with (
            run_gateway(config) as gateway,
            StatusServer(WebConfig(enabled=True, port=0, refresh_s=0.5), gateway) as server,
        ):
            base = f"http://127.0.0.1:{server.port}"

            async def metrics() -> str:
                return await asyncio.to_thread(_get, f"{base}/metrics")

            async def city_connected() -> bool:
                return _metric(await metrics(), "citynerve_destination_connected", destination="city") == 1

            await wait_for(city_connected, 20)
            api = json.loads(await asyncio.to_thread(_get, f"{base}/api/status"))
            text = await metrics()
            after = json.loads(await asyncio.to_thread(_get, f"{base}/api/status"))
        dests = (api["uplink"]["destinations"], after["uplink"]["destinations"])
        assert _metric(text, "citynerve_destination_connected", destination="district") == 0
        for lane in ("event", "telemetry"):
            assert (
                _metric(text, "citynerve_destination_dropped_rows_total", destination="city", lane=lane) == 0
            )
        dropped = _metric(
            text, "citynerve_destination_dropped_rows_total", destination="district", lane="telemetry"
        )
        assert dropped == lost == dests[1]["district"]["dropped"]["telemetry"]
        # The district's backlog only grows (its broker is down, nothing is dropped now): what
        # /metrics said lies between the status read before it and the one after.
        backlog = _metric(
            text, "citynerve_destination_backlog_rows", destination="district", lane="telemetry"
        )
        low, high = (d["district"]["backlog"]["telemetry"] for d in dests)
        assert before["district"]["backlog"]["telemetry"] <= low <= backlog <= high
        assert _metric(text, "citynerve_destination_acked_seq", destination="district", lane="telemetry") == 0
    finally:
        broker.close()
