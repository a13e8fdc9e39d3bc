"""CPU-bound, deterministic commands the suite starts at its beginning and reads at the test that
needs them: on a 2-core CI machine the rest of the suite mostly waits on brokers, devices and
processes, so a long benchmark run (`rules_eval.py --json --small`, over a minute) overlaps it
instead of adding to it. Only commands whose output depends on nothing but their seeds belong here:
their verdict is the same whenever they run. A command starts only when a test that reads it is
selected, runs under `nice` so the suite's timed peers keep priority, and is killed at the end of
the session if still running."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

RULES_EVAL = "rules_eval"
COMMANDS: dict[str, tuple[str, list[str]]] = {
    # name: (the test that reads it, the command)
    RULES_EVAL: (
        "tests/rules/test_eval_independent.py::test_independent_scores_through_the_benchmark_json",
        [sys.executable, "-m", "citynerve.hil.bench.rules_eval", "--json", "--small"],
    ),
}


@dataclass
class _Running:
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path


_running: dict[str, _Running] = {}


def start_selected(session: pytest.Session) -> None:
    """Start the command of every selected test that reads one (pytest_collection_finish)."""
    selected = {item.nodeid for item in session.items}
    for name, (nodeid, argv) in COMMANDS.items():
        if nodeid in selected and name not in _running:
            folder = Path(tempfile.mkdtemp(prefix=f"citynerve-{name}-"))
            out, err = folder / "stdout", folder / "stderr"
            with out.open("wb") as o, err.open("wb") as e:
                proc = subprocess.Popen(argv, stdout=o, stderr=e, stdin=subprocess.DEVNULL, preexec_fn=_nice)
            _running[name] = _Running(proc, out, err)


def _nice() -> None:
    os.nice(10)


def result(name: str, timeout_s: float = 900.0) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a command started at the beginning (or now, when the test
    runs alone and collection did not start it)."""
    if name not in _running:
        _, argv = COMMANDS[name]
        proc = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    run = _running[name]
    code = run.proc.wait(timeout=timeout_s)
    return code, run.stdout.read_text(), run.stderr.read_text()


def stop_all() -> None:
    """Kill what is still running (pytest_sessionfinish): nothing outlives the session."""
    for run in _running.values():
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
    _running.clear()
