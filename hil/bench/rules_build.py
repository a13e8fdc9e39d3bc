"""Rule-engine build benchmark: binding the rules to N devices, at start and at every reload.

A site of N Modbus smoke detectors (profile modbus-smoke-detector), two per flat (`zone:z<k>`), all
of one building (`building:b1`), with the shipped smoke-fire pack (its coincidence and unwanted
composites bind each detector to its flat's other detector), loaded by the real config loader.

1. Seconds to build the engine (`RuleEngine(config.rules, config.devices)`) per N; baseline in the
   same run: the same pack with its three composites disabled (`disable`), so the ratio is what
   binding the composites costs on top of the plain per-device rules. Quadratic binding showed as a
   ratio growing with N (each detector's area was found by scanning every device).
2. The event loop while the runtime builds one (`build_engine`, as at start; a reload builds the
   same way): the longest gap between the ticks of a 10 ms ticker task, against the build's time.

    python -m citynerve.hil.bench.rules_build [--devices 1000,2000,4000,10000] [--runs 3] [--json]

Only the public API is used, so the script measures any checkout: run it with another venv's
python (`/path/to/main/.venv/bin/python hil/bench/rules_build.py`) for a before/after pair.
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
from citynerve.gateway.rules import RuleEngine, build_engine

HEAD = """[gateway]
id = "gw-bench"
org = { city = "310100", district = "310106", street = "310106013" }
[store]
path = "var/gw.db"
[control]
socket = "var/gw.sock"
[web]
enabled = false
"""
COMPOSITES = ("unwanted_alarms", "smoke_confirmed", "fire_confirmed")


def site(folder: Path, n: int, *, composites: bool = True) -> Path:
    """A config of `n` detectors, 247 per Modbus TCP bus, two per flat, the smoke-fire pack."""
    parts = [HEAD]
    for b in range((n + 246) // 247):
        parts.append(
            f'[[buses]]\nid = "tcp{b}"\nprotocol = "modbus_tcp"\nhost = "127.0.0.1"\nport = {15100 + b}\n'
        )
    for i in range(n):
        parts.append(
            f'[[devices]]\nid = "sd-{i}"\nbus = "tcp{i // 247}"\nprofile = "modbus-smoke-detector"\n'
            f'address = {i % 247 + 1}\ntags = ["zone:z{i // 2}", "building:b1"]\n'
            'location = { address_code = "310106013007", building = "b1" }\n'
        )
    disable = "" if composites else f"disable = {json.dumps(list(COMPOSITES))}\n"
    parts.append(f'[[rules.packs]]\nname = "smoke-fire"\n{disable}')
    path = folder / f"site-{n}-{int(composites)}.toml"
    path.write_text("\n".join(parts))
    return path


def build_seconds(path: Path, runs: int) -> tuple[float, int]:
    """Median seconds of RuleEngine(...) over `runs`, and its rule instances."""
    cfg = load_config(path)
    assert cfg.rules is not None
    times, instances = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        engine = RuleEngine(cfg.rules, cfg.devices)
        times.append(time.perf_counter() - t0)
        instances = len(engine.instances)
    return statistics.median(times), instances


class MemoryState:
    """The rule engine's StateStore (the outbox's key/value state), in memory: nothing restored."""

    async def get(self, key: str) -> str | None:
        return None

    async def put(self, key: str, value: str) -> None:
        return None


async def loop_stall(path: Path) -> dict[str, float]:
    """The longest gap between a 10 ms ticker's ticks while `build_engine` runs, and the build's time."""
    cfg = load_config(path)
    assert cfg.rules is not None
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    await build_engine(cfg.rules, cfg.devices, state=MemoryState())
    took = time.perf_counter() - t0
    done.set()
    await task
    return {"build_engine_s": round(took, 3), "longest_loop_gap_s": round(max(gaps), 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="1000,2000,4000,10000", help="comma-separated device counts")
    ap.add_argument("--runs", type=int, default=3, help="builds per size (median)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sizes = [int(n) for n in args.devices.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cn-bench-") as tmp:
        for n in sizes:
            full, instances = build_seconds(site(Path(tmp), n), args.runs)
            plain, plain_instances = build_seconds(site(Path(tmp), n, composites=False), args.runs)
            stall = asyncio.run(loop_stall(site(Path(tmp), n)))
            rows.append(
                {
                    "devices": n,
                    "build_s": round(full, 3),
                    "instances": instances,
                    "baseline_without_composites_s": round(plain, 3),
                    "baseline_instances": plain_instances,
                    "ratio": round(full / plain, 2) if plain else None,
                    "us_per_device": round(full / n * 1e6, 1),
                    **stall,
                }
            )
            if not args.json:
                r = rows[-1]
                print(
                    f"{n:>6} devices: build {r['build_s']:.3f} s ({r['instances']} instances, "
                    f"{r['us_per_device']} us/device); without composites "
                    f"{r['baseline_without_composites_s']:.3f} s -> ratio {r['ratio']}; "
                    f"build_engine {r['build_engine_s']} s, longest loop gap "
                    f"{r['longest_loop_gap_s']} s",
                    flush=True,
                )
    if args.json:
        print(json.dumps({"sizes": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
