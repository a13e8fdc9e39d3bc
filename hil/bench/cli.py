"""Wall time of the commands a technician types on the box, at 1,000 configured devices.

Starts the footprint fleet (1,000 simulated Modbus TCP water meters, hil/bench/footprint.py) and a
`citynerve run` on it, then times whole processes: `citynerve status`, `citynerve config check`,
`citynerve diag modbus read` (routed through the running gateway) and `citynerve diag store`. Each
command runs `--runs` times; the figure is the median, of the wall time and of the process' CPU
time (`<command>_cpu_s`: less moved by other work on a shared machine). Baselines in the same run: a bare
`python -c pass` (the interpreter's own start) and, with `--baseline-python`, the same commands from
another checkout's venv, alternating with this one's run by run.

`--aarch64-root DIR`: also run every command (and `python -c pass`) under aarch64 emulation, in
the Debian arm64 root of hil/tools/aarch64_proof.py with the bundle installed in it (qemu-user via
binfmt, run as root for chroot). The gateway and the fleet stay native; the work folder (config,
store, control socket) lives inside the root so the emulated CLI and the native gateway share it.
Figures `aarch64_<command>_s` and `aarch64_ratio_<command>` (emulated / native, same run,
alternating): what a slow CPU does to the commands, relative to this machine.

    .venv/bin/python hil/bench/cli.py --json
    .venv/bin/python hil/bench/cli.py --baseline-python ../before/.venv/bin/python --runs 7
    sudo .venv/bin/python hil/bench/cli.py --aarch64-root /var/tmp/citynerve-arm64-root --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from citynerve.hil.bench.footprint import config_text, installed_env, precompile
from citynerve.hil.sim.modbus import start_tcp_devices
from citynerve.hil.tools.aarch64_proof import mounted

PROFILE = "modbus-water-meter"
AARCH64_PYTHON = "/opt/citynerve/current/bin/python"  # where aarch64_proof's install puts the venv


def commands(cfg: Path) -> dict[str, list[str]]:
    c = str(cfg)
    return {
        "status": ["status", "-c", c, "--json"],
        "config_check": ["config", "check", c],
        "diag_modbus_read": [
            "diag",
            "modbus",
            "read",
            "-c",
            c,
            "--bus",
            "tcp-0",
            "--unit",
            "1",
            "--address",
            "0",
        ],
        "diag_store": ["diag", "store", "-c", c, "--json"],
    }


def wall(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds from spawn to exit, CPU seconds user + system) of one process (it must succeed).

    The CPU time is the process' own (getrusage of waited-for children): on a machine other work
    shares it moves less than the wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=120, env=installed_env())
    took = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-1500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return took, cpu


async def wait_first_poll(fleet: object, proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise SystemExit("gateway exited during start-up")
        if all(device.reads for _, device in fleet.devices()):  # type: ignore[attr-defined]
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"not every device was read within {timeout_s} s")


def emulated(root: Path, where: Path, python: str, argv: list[str]) -> list[str]:
    """`python argv` run inside the aarch64 root, in the root's view of the folder `where`."""
    inside = "/" + str(where.relative_to(root))
    return ["chroot", str(root), "sh", "-c", f"cd {inside} && exec {python} {shlex.join(argv)}"]


async def measure(
    devices: int, runs: int, baseline_python: str | None, aarch64_root: Path | None = None
) -> dict:
    precompile(sys.executable)
    if baseline_python:
        precompile(baseline_python)
    fleet = await start_tcp_devices([PROFILE], devices)
    try:
        tmp_parent = None
        if aarch64_root is not None:
            tmp_parent = aarch64_root / "tmp"
            if not (aarch64_root / AARCH64_PYTHON.lstrip("/")).exists():
                raise SystemExit(
                    f"no {AARCH64_PYTHON} in {aarch64_root}: run hil/tools/aarch64_proof.py first"
                )
        with (
            tempfile.TemporaryDirectory(dir=tmp_parent) as tmp,
            mounted(aarch64_root) if aarch64_root is not None else contextlib.nullcontext(),
        ):
            where = Path(tmp)
            cfg = Path("gw.toml")  # relative: the same file from the native and the emulated side
            (where / cfg).write_text(config_text(fleet.addresses, None, 10.0))
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "citynerve.gateway.cli",
                "run",
                "-c",
                str(cfg),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=installed_env(),
                cwd=where,
            )
            try:
                await wait_first_poll(fleet, proc, 60.0)
                pythons = {"gateway": sys.executable}
                if baseline_python:
                    pythons["baseline"] = baseline_python
                if aarch64_root is not None:
                    pythons["aarch64"] = AARCH64_PYTHON
                times: dict[str, dict[str, list[float]]] = {k: {} for k in pythons}
                cpus: dict[str, dict[str, list[float]]] = {k: {} for k in pythons}
                floor: list[float] = []
                emulated_floor: list[float] = []

                def argv_of(who: str, python: str, args: list[str]) -> list[str]:
                    if who == "aarch64":
                        assert aarch64_root is not None
                        return emulated(aarch64_root, where, python, args)
                    return [python, *args]

                for _ in range(runs):
                    floor.append((await asyncio.to_thread(wall, [sys.executable, "-c", "pass"], where))[0])
                    if aarch64_root is not None:
                        bare = argv_of("aarch64", AARCH64_PYTHON, ["-c", "pass"])
                        emulated_floor.append((await asyncio.to_thread(wall, bare, where))[0])
                    for name, argv in commands(cfg).items():
                        for who, python in pythons.items():
                            run = argv_of(who, python, ["-m", "citynerve.gateway.cli", *argv])
                            took, cpu = await asyncio.to_thread(wall, run, where)
                            times[who].setdefault(name, []).append(took)
                            cpus[who].setdefault(name, []).append(cpu)
            finally:
                proc.terminate()
                await proc.wait()
    finally:
        await fleet.aclose()
    out: dict = {"devices": devices, "runs": runs, "python_start_s": round(statistics.median(floor), 3)}
    for name in commands(cfg):
        ours = statistics.median(times["gateway"][name])
        out[f"{name}_s"] = round(ours, 3)
        out[f"{name}_over_python_start"] = round(ours / out["python_start_s"], 1)
        ours_cpu = statistics.median(cpus["gateway"][name])
        out[f"{name}_cpu_s"] = round(ours_cpu, 3)
        if baseline_python:
            base = statistics.median(times["baseline"][name])
            out[f"baseline_{name}_s"] = round(base, 3)
            out[f"ratio_{name}"] = round(ours / base, 3)
            base_cpu = statistics.median(cpus["baseline"][name])
            out[f"baseline_{name}_cpu_s"] = round(base_cpu, 3)
            out[f"ratio_{name}_cpu"] = round(ours_cpu / base_cpu, 3)
        if aarch64_root is not None:
            emu = statistics.median(times["aarch64"][name])
            out[f"aarch64_{name}_s"] = round(emu, 3)
            out[f"aarch64_ratio_{name}"] = round(emu / ours, 2)
    if aarch64_root is not None:
        out["aarch64_python_start_s"] = round(statistics.median(emulated_floor), 3)
        out["aarch64_ratio_python_start"] = round(out["aarch64_python_start_s"] / out["python_start_s"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (median)")
    parser.add_argument("--baseline-python", help="python of another checkout's venv, run alternately")
    parser.add_argument(
        "--aarch64-root",
        type=Path,
        help="also run the commands emulated in this arm64 root (hil/tools/aarch64_proof.py made it)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    root = args.aarch64_root.resolve() if args.aarch64_root else None
    result = asyncio.run(measure(args.devices, args.runs, args.baseline_python, root))
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
