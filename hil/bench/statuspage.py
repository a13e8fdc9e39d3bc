"""What the local status page and /metrics cost a running gateway with a large building.

    .venv/bin/python -m citynerve.hil.bench.statuspage [--devices 200] [--json]

A real gateway polls `--devices` simulated Modbus devices (pymodbus servers, water meters and
three-phase meters, 10 floors) until every device has readings. Then, median of 5 runs each:
- on one status snapshot (pure CPU): baseline `json.dumps(status)` (what the control socket sends
  for `citynerve status`) against `page_state` + `json.dumps` (one /api/status refresh) and
  `render_metrics` (one /metrics scrape);
- end to end, each with a fresh `status()`: baseline `ask(socket, "status")` over the control
  socket against GET /metrics over loopback through the status server (its cache bypassed).
Ratios are against the baselines from the same run (the machine is shared: compare ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from citynerve.gateway.config import load_config
from citynerve.gateway.control import ask
from citynerve.gateway.runtime import Gateway
from citynerve.gateway.web import StatusServer, WebConfig
from citynerve.gateway.web.metrics import render_metrics
from citynerve.gateway.web.state import page_state
from citynerve.hil.sim.modbus import start_tcp_devices

REPO = Path(__file__).resolve().parents[2]
PROFILES = ("modbus-water-meter", "modbus-power-meter-3ph")


def _config(addresses: list[tuple[str, int, int]], profiles: list[str], folder: Path) -> Path:
    lines = [
        f'profile_dirs = ["{REPO / "config" / "profiles"}"]',
        '[gateway]\nid = "gw-bench"\norg = { city = "310100", district = "310106", street = "310106013" }',
        '[store]\npath = "bench.db"\nsynchronous = "normal"',
        '[control]\nsocket = "bench.sock"',
    ]
    endpoints = sorted({(h, p) for h, p, _ in addresses})
    for i, (host, port) in enumerate(endpoints):
        lines.append(f'[[buses]]\nid = "tcp-{i}"\nprotocol = "modbus_tcp"\nhost = "{host}"\nport = {port}')
    for n, ((host, port, unit), profile) in enumerate(zip(addresses, profiles, strict=True)):
        bus = endpoints.index((host, port))
        lines.append(
            f'[[devices]]\nid = "d{n}"\nbus = "tcp-{bus}"\nprofile = "{profile}"\naddress = {unit}\n'
            f"poll_interval_s = 2\n"
            f'location = {{ address_code = "310106013007", building = "7", floor = "{n % 10 + 1}", '
            f'room = "{n % 10 + 1}0{n % 7}" }}'
        )
    path = folder / "bench.toml"
    path.write_text("\n\n".join(lines) + "\n")
    return path


async def _time(fn: Any, rounds: int) -> float:
    """Median seconds of one call over 5 runs of `rounds` calls."""
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(rounds):
            await fn()
        runs.append((time.perf_counter() - t0) / rounds)
    return statistics.median(runs)


async def _http_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


async def bench(devices: int) -> dict[str, Any]:
    fleet = await start_tcp_devices(PROFILES, devices)
    try:
        with tempfile.TemporaryDirectory(prefix="cnb-", dir="/tmp") as tmp:
            kinds = [d.profile.id for _, d in fleet.devices()]
            cfg = load_config(_config(fleet.addresses, kinds, Path(tmp)))
            gw = Gateway(cfg)
            stop = asyncio.Event()
            task = asyncio.create_task(gw.run(stop))
            try:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    if gw.pipeline and all(gw.pipeline.latest(d.id) for d in cfg.devices):
                        break
                status = await gw.status()
                points = sum(len(dev["readings"]) for bus in status["buses"] for dev in bus["devices"])

                snapshot = await gw.status()

                # Pure CPU on one snapshot: what each view adds to the same data.
                async def baseline() -> None:
                    json.dumps(snapshot, default=str)

                async def page() -> None:
                    json.dumps(page_state(snapshot, gw.config, refresh_s=2.0), default=str)

                async def metrics() -> None:
                    render_metrics(snapshot)

                base_s = await _time(baseline, 20)
                page_s = await _time(page, 20)
                metrics_s = await _time(metrics, 20)

                # End to end, each with a fresh status(): the control socket (`citynerve status`)
                # against a GET /metrics through the status server.
                socket = Path(cfg.control.socket)

                async def control() -> None:
                    await ask(socket, "status")

                async with StatusServer(WebConfig(enabled=True, port=0, refresh_s=0.5), gw) as server:
                    assert server.port is not None
                    port = server.port

                    async def http() -> None:
                        server._cache = None  # every request pays for a fresh status, as a first visit
                        body = await _http_get(port, "/metrics")
                        assert body.startswith(b"HTTP/1.1 200")

                    control_s = await _time(control, 5)
                    http_s = await _time(http, 5)
            finally:
                stop.set()
                t_stop = time.perf_counter()
                await asyncio.wait_for(task, 180)
                stop_s = time.perf_counter() - t_stop
    finally:
        await fleet.aclose()
    return {
        "devices": devices,
        "points": points,
        "status_json_ms": round(base_s * 1000, 3),
        "page_ms": round(page_s * 1000, 3),
        "metrics_ms": round(metrics_s * 1000, 3),
        "page_ratio": round(page_s / base_s, 2),
        "metrics_ratio": round(metrics_s / base_s, 2),
        "control_status_ms": round(control_s * 1000, 2),
        "http_metrics_ms": round(http_s * 1000, 2),
        "http_ratio": round(http_s / control_s, 2),
        "gateway_stop_s": round(stop_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(bench(args.devices))
    if args.json:
        print(json.dumps(result))
        return
    r = result
    print(f"{r['devices']} devices, {r['points']} points with readings")
    print("one status snapshot:")
    print(f"  baseline json.dumps(status)      {r['status_json_ms']:8.3f} ms")
    print(f"  page_state + json (/api/status)  {r['page_ms']:8.3f} ms  x{r['page_ratio']}")
    print(f"  render_metrics (/metrics)        {r['metrics_ms']:8.3f} ms  x{r['metrics_ratio']}")
    print("end to end with a fresh status():")
    print(f"  baseline control socket status   {r['control_status_ms']:8.2f} ms")
    print(f"  GET /metrics over loopback       {r['http_metrics_ms']:8.2f} ms  x{r['http_ratio']}")
    print(f"gateway stop after the run: {r['gateway_stop_s']} s")


if __name__ == "__main__":
    main()
