"""Prove an aarch64 bundle on an emulated Raspberry Pi OS-like root (opt-in: slow, needs root).

Builds (or reuses) a Debian 12 arm64 root with mmdebstrap from Debian's arm64 packages, then runs
everything inside it under qemu-user-static (binfmt, registered by Debian's qemu-user-static
package): installs the bundle offline with its own install.py (the root has no `cryptography`, so
the signature is checked with openssl), then `citynerve --version`, `config check` on every shipped
example and `citynerve demo --duration 30`. Prints each step's wall time (emulated), `--json` too.

    apt-get install mmdebstrap qemu-user-static binfmt-support arch-test
    sudo .venv/bin/python -m citynerve.hil.tools.aarch64_proof --bundle dist/citynerve-0.1.0-aarch64.tar.gz \\
        --key config/release-key.pem --debian-root /var/tmp/arm64-root [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

# mosquitto: the demo's broker, as on a Pi (without it the demo falls back to embedded amqtt, MQTT 3.1.1).
PACKAGES = "python3,python3-venv,openssl,ca-certificates,mosquitto"


class ProofError(Exception):
    """A step failed; the message names it and carries the tail of its output."""


def step(name: str, cmd: list[str], timings: dict[str, float], *, timeout: float = 1800) -> str:
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    timings[name] = round(time.monotonic() - start, 1)
    if proc.returncode != 0:
        raise ProofError(f"{name}: exit {proc.returncode}\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout


def debian_root(root: Path, suite: str, timings: dict[str, float]) -> None:
    if (root / "usr" / "bin" / "python3").exists():
        if not (root / "usr" / "sbin" / "mosquitto").exists():  # a root made before mosquitto was listed
            apt = "apt-get update -qq && apt-get install -y -qq --no-install-recommends mosquitto"
            step("apt-get install mosquitto", ["chroot", str(root), "sh", "-c", apt], timings)
        return
    missing = [t for t in ("mmdebstrap", "qemu-aarch64-static", "arch-test") if shutil.which(t) is None]
    if missing:
        raise ProofError(f"missing {' '.join(missing)}: apt install mmdebstrap qemu-user-static arch-test")
    step("mmdebstrap arm64 root", ["mmdebstrap", "--mode=root", "--architectures=arm64", "--variant=apt",
                                   f"--include={PACKAGES}", suite, str(root)], timings)  # fmt: skip


@contextlib.contextmanager
def mounted(root: Path) -> Iterator[None]:
    """/proc, /dev and /dev/pts inside the root (the demo's simulated meters use pty pairs)."""
    done: list[Path] = []
    try:
        for src, dest, opts in (("proc", "proc", ["-t", "proc"]), ("/dev", "dev", ["--bind"]),
                                ("/dev/pts", "dev/pts", ["--bind"])):  # fmt: skip
            subprocess.run(["mount", *opts, src, str(root / dest)], check=True)
            done.append(root / dest)
        yield
    finally:
        for path in reversed(done):
            subprocess.run(["umount", "-l", str(path)], check=False)


def prove(bundle: Path, key: Path, root: Path, *, suite: str, duration: int) -> dict[str, object]:
    timings: dict[str, float] = {}
    debian_root(root, suite, timings)
    work = root / "tmp" / "citynerve-proof"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(root / "opt" / "citynerve", ignore_errors=True)
    work.mkdir(parents=True)
    with tarfile.open(bundle) as tar:
        tar.extractall(work, filter="data")
    (folder,) = [p for p in work.iterdir() if p.is_dir()]
    shutil.copy2(key, work / "release-key.pem")
    inside = "/tmp/citynerve-proof"
    chroot = ["chroot", str(root)]
    with mounted(root):
        arch = step("uname -m", [*chroot, "uname", "-m"], timings).strip()
        if arch != "aarch64":
            raise ProofError(f"the root runs as {arch}, not aarch64")
        python = step("python3 --version", [*chroot, "python3", "--version"], timings).strip()
        step("install bundle offline (--sim)", [*chroot, "python3", f"{inside}/{folder.name}/install.py",
             "--root", "/opt/citynerve", "--key", f"{inside}/release-key.pem", "--sim"], timings)  # fmt: skip
        cn = [*chroot, "/opt/citynerve/bin/citynerve"]
        version = step("citynerve --version", [*cn, "--version"], timings).strip()
        code = "from citynerve.gateway import shipped; print(*sorted(shipped.examples().glob('*.toml')))"
        py = "/opt/citynerve/current/bin/python"
        listing = step("find examples", [*chroot, py, "-c", code], timings).split()
        for example in listing:
            step(f"config check {Path(example).name}", [*cn, "config", "check", example], timings)
        demo = f"cd {inside} && /opt/citynerve/bin/citynerve demo --duration {duration}"
        out = step(f"demo --duration {duration}", [*chroot, "sh", "-c", demo], timings)
    summary = " ".join(out[out.index("demo done") :].split()) if "demo done" in out else ""  # rich wraps it
    return {"arch": arch, "python": python, "version": version, "examples": len(listing),
            "demo": summary, "timings_s": timings}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True, help="release public key (PEM)")
    parser.add_argument("--debian-root", type=Path, default=Path("/var/tmp/citynerve-arm64-root"))
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    try:
        result = prove(args.bundle.resolve(), args.key.resolve(), args.debian_root, suite=args.suite,
                       duration=args.duration)  # fmt: skip
    except (ProofError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        print(f"aarch64 proof failed: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for name, seconds in result["timings_s"].items():  # type: ignore[attr-defined]
            print(f"{seconds:8.1f} s  {name}")
        print(result["demo"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
