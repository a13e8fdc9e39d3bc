"""The project's own promises: README commands match CI, lint and types are clean, modules are small."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# STYLE.md: small modules, split before ~600 lines. Every .py of these folders, no exemptions.
MAX_MODULE_LINES = 600
SOURCE_DIRS = ("gateway", "drivers", "hil", "device_fw", "tests")


def readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert block, "README has no bash block at the top"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_readme_starts_with_the_two_setup_commands() -> None:
    demo, tests = readme_commands()
    assert demo.startswith("python3 -m venv .venv && .venv/bin/pip install") and demo.endswith(
        "citynerve demo"
    )
    assert "'.[sim]'" in demo, "the demo needs the simulators' extra (citynerve[sim])"
    assert "pytest" in tests and ".venv" in tests


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    _, tests = readme_commands()
    assert tests in ci, f"README's test command is not what .ci/run runs:\n{tests}"


def test_ruff_is_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def test_mypy_is_clean() -> None:
    # Under the installed import names (pyproject's package-dir): see hil/tools/typecheck.py.
    proc = subprocess.run(
        [sys.executable, "-m", "citynerve.hil.tools.typecheck"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def test_no_module_is_over_600_lines() -> None:
    lengths = {
        path.relative_to(REPO).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for folder in SOURCE_DIRS
        for path in sorted((REPO / folder).rglob("*.py"))
    }
    assert len(lengths) > 100, f"found only {len(lengths)} modules under {SOURCE_DIRS}: wrong folder?"
    over = {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES}
    listing = "\n".join(f"  {name}: {n} lines" for name, n in sorted(over.items(), key=lambda kv: -kv[1]))
    assert not over, f"modules over {MAX_MODULE_LINES} lines (split them, STYLE.md):\n{listing}"
