"""When the gateway's RSS high-water mark is reached: VmRSS / VmHWM every 50 ms from spawn.

The footprint load (hil/bench/footprint.py: 1,000 simulated Modbus TCP meters every 10 s, uplink to
a local Mosquitto); prints one line per step of the high-water mark and one every half second:
seconds since spawn, VmRSS MB, VmHWM MB. A jump of VmHWM with VmRSS back at once is a transient
(the retained inventory at the first connect); a rise of both is memory kept.

    .venv/bin/python -m citynerve.hil.bench.rss_timeline [--seconds 30] [--python PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from citynerve.hil.bench.footprint import PROFILE, config_text, installed_env, proc_sample
from citynerve.hil.platform import MosquittoBroker
from citynerve.hil.sim.modbus import start_tcp_devices


async def timeline(python: str, seconds: float, devices: int) -> list[tuple[float, float, float]]:
    fleet = await start_tcp_devices([PROFILE], devices)
    broker = MosquittoBroker()
    broker.start()
    marks: list[tuple[float, float, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "gw.toml"
            cfg.write_text(config_text(fleet.addresses, f"mqtt://{broker.host}:{broker.port}", 10.0))
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                python, "-m", "citynerve.gateway.cli", "run", "-c", str(cfg),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=installed_env(),
            )  # fmt: skip
            try:
                high = 0.0
                next_line = 0.0
                while (t := time.monotonic() - started) < seconds:
                    await asyncio.sleep(0.05)
                    try:
                        rss, hwm, _ = proc_sample(proc.pid)
                    except (FileNotFoundError, KeyError):  # not started yet / gone
                        continue
                    if hwm > high + 0.2 or t >= next_line:
                        marks.append((round(t, 2), round(rss, 1), round(hwm, 1)))
                        high = max(high, hwm)
                        next_line = t + 0.5
            finally:
                proc.terminate()
                await proc.wait()
    finally:
        await fleet.aclose()
        broker.close()
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--python", default=sys.executable, help="the gateway's interpreter (checkout)")
    args = parser.parse_args()
    for t, rss, hwm in asyncio.run(timeline(args.python, args.seconds, args.devices)):
        print(f"{t:6.2f} s  VmRSS {rss:5.1f} MB  VmHWM {hwm:5.1f} MB")


if __name__ == "__main__":
    main()
