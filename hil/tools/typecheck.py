"""Type-check the project with mypy under its installed import names.

The package folders (gateway/, drivers/, hil/, config/) are installed under other import names by
pyproject's `[tool.setuptools.package-dir]` (e.g. `citynerve.gateway` -> gateway/). mypy does not
follow setuptools' editable-install import hooks, so this builds a temporary folder of symlinks
with the installed layout (`citynerve/gateway -> <repo>/gateway`, ...) and runs mypy there on the
packages `[tool.mypy] packages` names (folders without a mapping are linked under their own name).
Fails, too, when mypy checked fewer files than the packages hold (nothing silently skipped).

    .venv/bin/python -m citynerve.hil.tools.typecheck [mypy options]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(extra: list[str]) -> int:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapping: dict[str, str] = project.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    packages: list[str] = project["tool"]["mypy"]["packages"]
    expected = sum(
        1
        for name in packages
        for folder in [REPO / mapping.get(name, name.replace(".", "/"))]
        for _ in folder.rglob("*.py")
    )
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), *extra]
    with tempfile.TemporaryDirectory(prefix="citynerve-mypy-") as tmp:
        cwd = Path(tmp)
        folders = {**{p.split(".")[0]: p.split(".")[0] for p in packages if p not in mapping}, **mapping}
        for name, folder in folders.items():
            link = cwd.joinpath(*name.split("."))
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(REPO / folder, target_is_directory=True)
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    out = proc.stdout.replace(f"{cwd}/", "")
    sys.stdout.write(out)
    sys.stderr.write(proc.stderr)
    checked = re.search(r"in (\d+) source files?", out)
    if proc.returncode == 0 and checked and int(checked.group(1)) < expected:
        print(f"mypy checked {checked.group(1)} files, the packages hold {expected}", file=sys.stderr)
        return 1
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1:]))
