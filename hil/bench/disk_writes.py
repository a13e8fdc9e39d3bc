"""What the gateway writes to disk at the footprint load, file by file and call by call.

Runs the footprint set-up (hil/bench/footprint.py: 1,000 simulated Modbus TCP meters every 10 s,
Mosquitto for the uplink) with the gateway under `strace -f` (only the file-writing calls are
traced, via seccomp), and after the warm-up counts for the measuring window, per file: write calls,
bytes, fsyncs, truncations. The footprint's `disk_write_*` figures say how much; this says what
(WAL frames, checkpoints, the epoch marker, logs), so that tuning follows the figures.

    .venv/bin/python -m citynerve.hil.bench.disk_writes --seconds 60 [--json] [--python OTHER]

strace needs ptrace of a child (allowed by default). Its log goes to /dev/shm (not the disk measured).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from citynerve.hil.bench.footprint import PROFILE, config_text, installed_env, precompile
from citynerve.hil.platform import MosquittoBroker, find_mosquitto
from citynerve.hil.sim.modbus import start_tcp_devices

CALLS = "pwrite64,write,writev,pwritev,pwritev2,fsync,fdatasync,ftruncate,rename,unlink"
# 12345 1700000000.123456 pwrite64(7</tmp/x/gw.db-wal>, ""..., 4120, 0) = 4120
LINE = re.compile(r"^(\d+)\s+([\d.]+)\s+(\w+)\((\d+)<([^>]*)>(.*)\)\s+=\s+(-?\d+)")
PATH_CALL = re.compile(r'^(\d+)\s+([\d.]+)\s+(rename|unlink)\("([^"]*)"')


def summarize(log: Path, t0: float, t1: float, tmp: str) -> dict[str, dict[str, int]]:
    """Per file (the temporary folder's prefix cut off): writes, bytes, fsyncs, ftruncates,
    renames/unlinks, for calls between wall times t0 and t1. Sockets and pipes are left out."""
    files: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    tmp = os.path.realpath(tmp)
    for line in log.read_text(errors="replace").splitlines():
        m = LINE.match(line)
        if m:
            _, ts, call, _, path, _, ret = m.groups()
            if not t0 <= float(ts) < t1 or not path.startswith("/"):
                continue
            name = path.replace(tmp, "<tmp>")
            entry = files[name]
            if call in ("fsync", "fdatasync"):
                entry["fsync"] += 1
            elif call == "ftruncate":
                entry["ftruncate"] += 1
            elif int(ret) > 0:
                entry["writes"] += 1
                entry["bytes"] += int(ret)
            continue
        m = PATH_CALL.match(line)
        if m and t0 <= float(m.group(2)) < t1:
            files[m.group(4).replace(tmp, "<tmp>")][m.group(3)] += 1
    return {name: dict(v) for name, v in sorted(files.items())}


def stop_children(pid: int) -> None:
    """SIGTERM to the children of `pid` (the gateway under strace; strace then ends with it)."""
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        os.kill(int(child), signal.SIGTERM)


async def trace(devices: int, seconds: float, warmup_s: float, interval_s: float, python: str) -> dict:
    fleet = await start_tcp_devices([PROFILE], devices)
    broker = None
    if find_mosquitto():
        broker = MosquittoBroker()
        broker.start()
    try:
        with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
            cfg = Path(tmp) / "gw.toml"
            url = f"mqtt://{broker.host}:{broker.port}" if broker else None
            cfg.write_text(config_text(fleet.addresses, url, interval_s))
            log = Path(shm) / "strace.log"
            strace = ["strace", "-f", "--seccomp-bpf", "-y", "-ttt", "-s", "0", "-e", f"trace={CALLS}"]
            proc = await asyncio.create_subprocess_exec(
                *strace,
                "-o",
                str(log),
                python,
                "-m",
                "citynerve.gateway.cli",
                "run",
                "-c",
                str(cfg),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=installed_env(),
            )
            try:
                await asyncio.sleep(warmup_s)
                reads0 = sum(d.reads for _, d in fleet.devices())
                t0 = time.time()
                await asyncio.sleep(seconds)
                t1 = time.time()
                reads = sum(d.reads for _, d in fleet.devices()) - reads0
            finally:
                stop_children(proc.pid)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            files = summarize(log, t0, t1, tmp)
    finally:
        await fleet.aclose()
        if broker:
            broker.close()
    wall = t1 - t0
    total = sum(f.get("bytes", 0) for f in files.values())
    return {
        "window_s": round(wall, 1),
        "transactions": reads,
        "written_bytes_per_s": round(total / wall),
        "files": {
            name: {
                **f,
                "bytes_per_s": round(f.get("bytes", 0) / wall),
                "writes_per_s": round(f.get("writes", 0) / wall, 2),
                "fsync_per_s": round(f.get("fsync", 0) / wall, 2),
            }
            for name, f in files.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0, help="measuring window")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument("--interval", type=float, default=10.0, help="poll interval of every device")
    parser.add_argument("--python", default=sys.executable, help="the gateway's python (another checkout)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    precompile(args.python)
    result = asyncio.run(trace(args.devices, args.seconds, args.warmup, args.interval, args.python))
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{args.devices} devices every {args.interval} s, {result['window_s']} s window: "
        f"{result['written_bytes_per_s']} B/s written (write calls' bytes, before the page cache)"
    )
    for name, f in result["files"].items():
        extra = " ".join(f"{k} {v}" for k, v in f.items() if k in ("ftruncate", "rename", "unlink"))
        print(
            f"  {name}: {f['bytes_per_s']} B/s in {f['writes_per_s']} writes/s, "
            f"{f['fsync_per_s']} fsync/s {extra}"
        )


if __name__ == "__main__":
    main()
