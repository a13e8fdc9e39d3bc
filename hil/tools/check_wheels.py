"""Check that every runtime dependency installs on a Raspberry Pi (aarch64) from wheels alone.

Asks pip to resolve the project's `[project] dependencies` for CPython 3.11 on manylinux aarch64
with `--only-binary=:all:` (no compiler on the Pi needed). Needs PyPI, so it is a tool, not a test.

    .venv/bin/python -m citynerve.hil.tools.check_wheels [--platform aarch64|x86_64|armv7l]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLATFORMS = {
    "aarch64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64", "linux_aarch64"],
    "x86_64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64"],
    "armv7l": ["manylinux_2_31_armv7l", "manylinux_2_17_armv7l", "linux_armv7l"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--platform", choices=sorted(PLATFORMS), default="aarch64")
    parser.add_argument("--python-version", default="3.11")
    args = parser.parse_args()
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--dest", tmp, "--only-binary=:all:"]
        cmd += ["--python-version", args.python_version, "--implementation", "cp"]
        for tag in PLATFORMS[args.platform]:
            cmd += ["--platform", tag]
        proc = subprocess.run([*cmd, *deps], capture_output=True, text=True)
        wheels = sorted(p.name for p in Path(tmp).glob("*.whl"))
    if proc.returncode != 0:
        print(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "pip failed", file=sys.stderr)
        return 1
    native = [w for w in wheels if not w.endswith("-none-any.whl")]
    print(f"{len(wheels)} wheels for {args.platform}, {len(native)} with native code:")
    for w in native:
        print(f"  {w}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
