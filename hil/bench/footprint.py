"""Footprint of `citynerve run` with 1,000 simulated Modbus TCP devices polled every 10 s.

Starts the simulated fleet (10 endpoints x 100 unit ids by default, real pymodbus servers in this
process), a local Mosquitto for the uplink (when installed; --no-uplink to leave it out), then the
gateway as its own process. After a warm-up it samples the gateway's RSS and CPU time for the
measuring window and prints peak RSS (MB) and mean CPU (% of one core).

    .venv/bin/python hil/bench/footprint.py            # 1,000 devices, 60 s window
    .venv/bin/python hil/bench/footprint.py --json --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from citynerve.hil.platform import MosquittoBroker, find_mosquitto
from citynerve.hil.sim.modbus import start_tcp_devices

PROFILE = "modbus-water-meter"
TRACED = (
    "import sys, threading, time, tracemalloc\n"
    "from collections import Counter\n"
    "tracemalloc.start(1)\n"
    "def dump():\n"
    "    time.sleep({after_s})\n"
    "    stats = tracemalloc.take_snapshot().statistics('filename')\n"
    "    by_package = Counter()\n"
    "    for st in stats:\n"
    "        name = st.traceback[0].filename\n"
    "        for cut in ('site-packages/', '/lib/python3.11/', '/citynerve/', '/gateway/', '/drivers/'):\n"
    "            if cut in name:\n"
    "                name = cut.strip('/') + ':' + name.split(cut, 1)[1].split('/')[0]\n"
    "                break\n"
    "        by_package[name] += st.size\n"
    "    with open({out!r}, 'w') as f:\n"
    "        f.write(f'traced {{sum(by_package.values()) / 1e6:.2f}} MB\\n')\n"
    "        for name, size in by_package.most_common(25):\n"
    "            f.write(f'{{size / 1e6:8.2f}} MB  {{name}}\\n')\n"
    "        for st in stats[:25]:\n"
    "            f.write(f'{{st}}\\n')\n"
    "threading.Thread(target=dump, daemon=True).start()\n"
    "sys.argv[0] = 'citynerve'\n"
    "from citynerve.gateway.cli import entry\n"
    "entry()\n"
)
"""`--tracemalloc`: the gateway under tracemalloc, what holds Python memory by package after warm-up."""

PROFILED = (
    "import cProfile, sys, time\n"
    "from citynerve.gateway.cli import entry\n"
    "sys.argv[0] = 'citynerve'\n"
    "p = cProfile.Profile(time.thread_time)\n"
    "try:\n"
    "    p.runcall(entry)\n"
    "except SystemExit:\n"
    "    pass\n"
    "finally:\n"
    "    p.dump_stats({out!r})\n"
)


def config_text(addresses: list[tuple[str, int, int]], broker: str | None, interval_s: float) -> str:
    text = textwrap.dedent(
        """
        [gateway]
        id = "gw-footprint"
        org = { city = "310100", district = "310106", street = "310106013" }
        [store]
        path = "gw.db"
        [control]
        socket = "gw.sock"
        [log]
        level = "warning"
        format = "json"
        """
    )
    if broker:
        text += f'[upstream]\nbrokers = ["{broker}"]\n'
    endpoints = sorted({(h, p) for h, p, _ in addresses})
    for i, (host, port) in enumerate(endpoints):
        text += f'\n[[buses]]\nid = "tcp-{i}"\nprotocol = "modbus_tcp"\nhost = "{host}"\nport = {port}\n'
    index = {ep: i for i, ep in enumerate(endpoints)}
    for n, (host, port, unit) in enumerate(addresses):
        text += (
            f'\n[[devices]]\nid = "wm-{n:04d}"\nbus = "tcp-{index[(host, port)]}"\nprofile = "{PROFILE}"\n'
            f"address = {unit}\npoll_interval_s = {interval_s}\n"
            'location = { address_code = "310106013007" }\n'
        )
    return text


def proc_sample(pid: int) -> tuple[float, float, float]:
    """(VmRSS MB, VmHWM MB, cpu seconds) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss = int(fields["VmRSS"].split()[0]) / 1024
    hwm = int(fields["VmHWM"].split()[0]) / 1024
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks  # utime + stime
    return rss, hwm, cpu


def system_cpu(pid: int) -> float:
    """CPU seconds the kernel spent for the process (stime: syscalls, socket sends, fsync)."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[12]) / os.sysconf("SC_CLK_TCK")


def disk_written(pid: int) -> int:
    """Bytes the process caused to be written to storage (write_bytes of /proc/<pid>/io)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def next_seq(db: Path) -> int | None:
    """The outbox's next record number (every stored reading and event takes one)."""
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            row = conn.execute("SELECT value FROM counters WHERE name = 'next_seq'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return int(row[0]) if row else None


def watch_blocks(db: Path) -> bool:
    """Record every telemetry block the gateway commits from now on: first_seq -> (bytes, readings).

    The uplink deletes a block as soon as the broker acknowledges it (woken by the commit), so
    sampling the queued blocks misses most of them. A trigger the bench adds to the gateway's
    outbox copies each new block's size into a side table instead: record bytes are the block's
    body plus 32 bytes for its other columns (two seqs, ts, codec, raw_len), what the store has to
    keep before SQLite's pages, journal and WAL. The trigger's own row (a few bytes per block, one
    block per commit window) is written by the gateway and counts in its disk figures.
    """
    import sqlite3

    try:
        conn = sqlite3.connect(db, timeout=5.0)
        with conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS bench_block_sizes "
                "(first_seq INTEGER PRIMARY KEY, bytes INTEGER, readings INTEGER)"
            )
            conn.execute(
                "CREATE TRIGGER IF NOT EXISTS bench_block_sizes AFTER INSERT ON reading_blocks BEGIN "
                "INSERT OR REPLACE INTO bench_block_sizes VALUES "
                "(NEW.first_seq, length(NEW.body) + 32, NEW.last_seq - NEW.first_seq + 1); END"
            )
        conn.close()
    except sqlite3.Error:
        return False
    return True


def watched_blocks(db: Path) -> dict[int, tuple[int, int]]:
    """The blocks `watch_blocks` recorded: first_seq -> (record bytes, readings)."""
    import sqlite3

    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return {}
    try:
        rows = conn.execute("SELECT first_seq, bytes, readings FROM bench_block_sizes").fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return {first: (size, n) for first, size, n in rows}


def installed_env() -> dict[str, str]:
    """The environment for gateway processes: bytecode cached as on an installed box."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def precompile(python: str) -> None:
    """Compile the package `python` imports, as `pip install` does: start-up then measures the
    gateway, not the compiler (a checkout run with PYTHONDONTWRITEBYTECODE compiles every start)."""
    where = subprocess.run(
        [
            python,
            "-c",
            "import citynerve.gateway as g, citynerve.drivers as d; print(g.__path__[0], d.__path__[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    subprocess.run([python, "-m", "compileall", "-q", *where], check=True, env=installed_env())


async def measure(
    devices: int,
    seconds: float,
    warmup_s: float,
    interval_s: float,
    uplink: bool,
    profile: Path | None = None,
    python: str = sys.executable,
    traced: Path | None = None,
) -> dict:
    fleet = await start_tcp_devices([PROFILE], devices)
    broker = None
    if uplink and find_mosquitto():
        broker = MosquittoBroker()
        broker.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "gw.toml"
            sock = Path(tmp) / "gw.sock"
            url = f"mqtt://{broker.host}:{broker.port}" if broker else None
            cfg.write_text(config_text(fleet.addresses, url, interval_s))
            # The profile counts the main thread's CPU time (time.thread_time), not wall time: a
            # socket send that waits for the CPU is not the gateway's work.
            runner = ["-c", PROFILED.format(out=str(profile))] if profile else []
            if traced:
                runner = ["-c", TRACED.format(out=str(traced), after_s=warmup_s)]
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                python,
                *(runner or ["-m", "citynerve.gateway.cli"]),
                "run",
                "-c",
                str(cfg),
                stdout=subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=installed_env(),
            )
            try:
                # Start-up: until the first transaction, then until every device was read once.
                first_poll_s = all_polled_s = None
                while time.monotonic() - started < warmup_s:
                    if proc.returncode is not None:
                        break
                    # Counted at the simulated devices: asking the gateway would cost it CPU and memory.
                    done = sum(1 for _, device in fleet.devices() if device.reads)
                    now = time.monotonic() - started
                    if done and first_poll_s is None:
                        first_poll_s = now
                    if done >= devices:
                        all_polled_s = now
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(max(0.0, warmup_s - (time.monotonic() - started)))
                if proc.returncode is not None:
                    err = await proc.stderr.read() if proc.stderr else b""
                    raise SystemExit(f"gateway exited: {err.decode()[-2000:]}")
                from citynerve.gateway.control import ask

                # Window figures from outside the gateway (the simulated devices' read counters,
                # the outbox's record numbers): asking its status here would raise its peak RSS.
                reads0 = sum(device.reads for _, device in fleet.devices())
                seq0 = next_seq(Path(tmp) / "gw.db")
                watch_blocks(Path(tmp) / "gw.db")
                _, _, cpu0 = proc_sample(proc.pid)
                sys0 = system_cpu(proc.pid)
                written0 = disk_written(proc.pid)
                t0 = time.monotonic()
                peak = 0.0
                rss_samples = []
                while time.monotonic() - t0 < seconds:
                    await asyncio.sleep(0.5)
                    rss, hwm, cpu1 = proc_sample(proc.pid)
                    peak = max(peak, hwm)
                    rss_samples.append(rss)
                wall = time.monotonic() - t0
                written = disk_written(proc.pid) - written0
                kernel = system_cpu(proc.pid) - sys0
                tx_window = sum(device.reads for _, device in fleet.devices()) - reads0
                seq1 = next_seq(Path(tmp) / "gw.db")
                cpu_pct = (cpu1 - cpu0) / wall * 100
                status = await ask(sock, "status")
                sizes = list(watched_blocks(Path(tmp) / "gw.db").values())
                readings_seen = sum(n for _, n in sizes)
                per_reading = sum(b for b, _ in sizes) / readings_seen if readings_seen else None
            finally:
                proc.terminate()
                await proc.wait()
    finally:
        await fleet.aclose()
        if broker:
            broker.close()
    transactions = sum(b["counters"]["transactions"] for b in status["buses"])
    stored = seq1 - seq0 if seq0 is not None and seq1 is not None else 0
    record_bytes = stored * per_reading if per_reading is not None else None
    return {
        "devices": devices,
        "devices_online": status["devices_online"],
        "poll_interval_s": interval_s,
        "uplink": bool(broker),
        "window_s": round(wall, 1),
        "rss_mb": round(peak, 1),
        "rss_mean_mb": round(sum(rss_samples) / len(rss_samples), 1),
        "cpu_percent": round(cpu_pct, 2),
        "transactions": transactions,
        "cpu_system_percent": round(kernel / wall * 100, 2),
        "cpu_ms_per_transaction": round((cpu1 - cpu0) * 1000 / tx_window, 3) if tx_window else None,
        "first_poll_s": round(first_poll_s, 2) if first_poll_s is not None else None,
        "all_polled_s": round(all_polled_s, 2) if all_polled_s is not None else None,
        "disk_write_bytes_per_s": round(written / wall),
        "disk_write_gb_per_day": round(written / wall * 86400 / 1e9, 2),
        "stored_records": stored,
        "disk_write_bytes_per_record": round(written / stored, 1) if stored else None,
        "record_bytes_per_reading": round(per_reading, 1) if per_reading is not None else None,
        "write_amplification": round(written / record_bytes, 1) if record_bytes else None,
    }


FIGURES = (
    "rss_mb",
    "rss_mean_mb",
    "cpu_percent",
    "cpu_system_percent",
    "cpu_ms_per_transaction",
    "first_poll_s",
    "all_polled_s",
    "disk_write_bytes_per_s",
    "write_amplification",
)


def median_of(results: list[dict], key: str) -> float | None:
    values = [r[key] for r in results if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def compare(args: argparse.Namespace) -> dict:
    """Alternate runs of this checkout's gateway and the baseline's; medians and ratios."""
    ours: list[dict] = []
    base: list[dict] = []
    precompile(sys.executable)
    precompile(args.baseline_python)
    for _ in range(args.runs):
        for python, into in ((args.baseline_python, base), (sys.executable, ours)):
            uplink = not args.no_uplink
            run = measure(args.devices, args.seconds, args.warmup, args.interval, uplink, None, python)
            into.append(asyncio.run(run))
    out: dict = {"runs": args.runs, "gateway": ours, "baseline": base}
    for key in FIGURES:
        mine, theirs = median_of(ours, key), median_of(base, key)
        out[key] = mine
        out[f"baseline_{key}"] = theirs
        out[f"ratio_{key}"] = round(mine / theirs, 3) if mine is not None and theirs else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0, help="measuring window")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before measuring")
    parser.add_argument("--interval", type=float, default=10.0, help="poll interval of every device")
    parser.add_argument("--no-uplink", action="store_true", help="leave the MQTT uplink out")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", type=Path, help="run the gateway under cProfile, stats to this file")
    parser.add_argument("--tracemalloc", type=Path, help="gateway under tracemalloc: top holders to this")
    parser.add_argument(
        "--baseline-python",
        help="python of another checkout's venv: alternate runs of both gateways, print medians, ratios",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each gateway with --baseline-python")
    args = parser.parse_args()
    precompile(sys.executable)
    if args.baseline_python:
        print(json.dumps(compare(args), indent=None if args.json else 1))
        return
    result = asyncio.run(
        measure(
            args.devices,
            args.seconds,
            args.warmup,
            args.interval,
            not args.no_uplink,
            args.profile,
            traced=args.tracemalloc,
        )
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['devices']} devices ({result['devices_online']} online) "
            f"every {result['poll_interval_s']} s, "
            f"uplink {'on' if result['uplink'] else 'off'}: peak RSS {result['rss_mb']} MB "
            f"(mean {result['rss_mean_mb']} MB), CPU {result['cpu_percent']} % of one core "
            f"over {result['window_s']} s ({result['cpu_ms_per_transaction']} ms per transaction); "
            f"first poll {result['first_poll_s']} s, every device read {result['all_polled_s']} s "
            f"after start; disk {result['disk_write_bytes_per_s']} B/s "
            f"({result['disk_write_gb_per_day']} GB/day, {result['disk_write_bytes_per_record']} B per "
            f"stored record, write amplification {result['write_amplification']})"
        )


if __name__ == "__main__":
    main()
