"""A gateway whose only destination is Sparkplug B shows it (a real `citynerve run`, a real
Mosquitto): the status JSON's `uplink` with the destination under `destinations`, the text of
`citynerve status`, and /metrics' per-destination figures. It said "uplink: not configured", with
`uplink: null` and no destination figures, because only a JSON v1 command destination was shown."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from citynerve.gateway.web.metrics import render_metrics
from citynerve.hil.faults._time_gateway import building_and_gateway, short_folder
from citynerve.hil.platform import MosquittoBroker
from tests.uplink.test_sparkplug_present_state import _destination


async def test_a_sparkplug_only_gateway_shows_its_destination(short_dir: Path) -> None:
    with short_folder(short_dir) as folder:
        broker = MosquittoBroker(workdir=folder)
        broker.start()
        try:
            extra = _destination(broker, primary_host=False)
            async with building_and_gateway(folder, {}, extra=extra) as (_, gw):

                async def born() -> dict[str, Any] | None:
                    st = await gw.status()
                    scada = ((st or {}).get("uplink") or {}).get("destinations", {}).get("scada")
                    return st if scada and scada["connected"] else None

                status = await gw.wait_for("the Sparkplug destination connected in status", born, 30.0)
                cli = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "citynerve.gateway.cli", "status", "-c", str(gw.config)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    cwd=folder,
                )
        finally:
            broker.close()
    up = status["uplink"]
    assert up["extra"]["encoding"] == "sparkplug-b" and up["connected"]
    assert "not configured" not in cli.stdout, cli.stdout
    assert f"uplink: connected {broker.url}" in cli.stdout, cli.stdout
    metrics = render_metrics(status)
    assert 'citynerve_destination_connected{destination="scada"} 1' in metrics
    assert 'citynerve_uplink_state{state="connected"} 1' in metrics
