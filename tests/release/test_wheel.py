"""The built artefact is what is tested: the wheel, in a signed bundle, installed offline into a
fresh venv outside the checkout (not editable), runs config check on every shipped example, the
demo, and a smoke subset of the test suite against the installed package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from .conftest import RELEASES, REPO

pytestmark = pytest.mark.slow

VERSION = "1.0.0"
# Test files that exercise the installed package's data and its real `citynerve run`.
SMOKE = (
    "tests/config/test_config_errors.py",
    "tests/rules/test_engine.py",
    "tests/store/test_store_outbox.py",
    "tests/uplink/test_encoding.py",
    "tests/integration/test_run_errors.py",
)
TEST_TOOLS = ("pytest", "pytest-asyncio", "pytest-timeout", "hypothesis", "jsonschema")


def _run(
    cmd: list[str], *, cwd: Path, timeout: float = 300, **kw: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload,no-any-return]


RELEASES.want("both-pythons", VERSION, pythons=("3.11", "3.13"))
# Each test's own install, made in the background after the build (tests/release/conftest.py).
RELEASES.want_install("wheel-examples", "both-pythons", sim=True)
RELEASES.want_install("wheel-runtime", "both-pythons")
# The test tools are not part of a release: from PyPI (the test extra's versions), into the smoke install.
_EXTRA = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
RELEASES.want_install(
    "wheel-smoke", "both-pythons", sim=True,
    pip=tuple(r for r in _EXTRA if r.split(">")[0].split("=")[0].strip() in TEST_TOOLS),
)  # fmt: skip


@pytest.fixture(scope="module")
def bundle() -> Path:
    return RELEASES.get("both-pythons")


def test_the_bundle_holds_wheels_for_both_pythons(bundle: Path) -> None:
    with tarfile.open(bundle) as tar:
        names = [Path(n).name for n in tar.getnames()]
    assert f"citynerve-{VERSION}-py3-none-any.whl" in names
    core = [n for n in names if n.startswith("pydantic_core-")]
    assert any("cp311" in n for n in core) and any("cp313" in n for n in core), core
    assert not [n for n in names if n.endswith((".tar.gz", ".zip"))], "sdists in a wheels-only bundle"
    assert {"install.py", "MANIFEST.json", "MANIFEST.json.sig"} <= set(names)


def test_the_installed_release_checks_every_example_and_runs_the_demo(tmp_path: Path) -> None:
    installed = RELEASES.installed("wheel-examples")  # install_from_bundle(bundle, ..., sim=True)
    root, proc = installed.root, installed.install
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cn = root / "bin" / "citynerve"
    work = tmp_path / "work"
    work.mkdir()
    assert _run([str(cn), "--version"], cwd=work).stdout.strip().endswith(VERSION)
    py = root / "current" / "bin" / "python"
    code = "from citynerve.gateway import shipped; print(shipped.examples())"
    where = _run([str(py), "-c", code], cwd=work)
    examples = Path(where.stdout.strip())
    assert examples.is_relative_to(root.resolve()), examples  # package data of the install, not the repo
    files = sorted(examples.glob("*.toml"))
    assert {f.name for f in files} == {f.name for f in (REPO / "config" / "examples").glob("*.toml")}
    for example in files:
        check = _run([str(cn), "config", "check", "--json", str(example)], cwd=work)
        report = json.loads(check.stdout)
        # Valid, or refused only for secret files (and the platform's CA) under /etc/citynerve/
        # that this machine lacks.
        missing = [
            i
            for i in report.get("issues", [])
            if "/etc/citynerve/" in i["message"] and "does not exist" in i["message"]
        ]
        assert report["valid"] or (check.returncode == 2 and missing == report["issues"]), (
            check.stdout + check.stderr
        )
    demo = _run([str(cn), "demo", "--duration", "20"], cwd=work, timeout=240)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "demo done" in demo.stdout


def test_the_runtime_install_has_no_simulator_dependencies(tmp_path: Path) -> None:
    installed = RELEASES.installed("wheel-runtime")  # install_from_bundle(bundle, ...), no --sim
    root = installed.root
    assert installed.install.returncode == 0, installed.install.stdout + installed.install.stderr
    py = str(root / "current" / "bin" / "python")
    probe = (
        "import sys, importlib.util\n"
        "import citynerve.gateway.runtime, citynerve.gateway.cli\n"
        "import citynerve.drivers.ble, citynerve.drivers.bthome, citynerve.drivers.modbus\n"
        "from citynerve.gateway.cli import load_command_modules; load_command_modules()\n"
        "hil = citynerve.gateway.cli.__name__.removesuffix('.cli').replace('gateway', 'hil')  # simulators\n"
        "sim = [m for m in sys.modules if m.split('.')[0] in ('bumble', 'amqtt') or m.startswith(hil)]\n"
        "print(sorted(sim))\n"
        "print([n for n in ('bumble', 'amqtt', 'psutil', 'sqlite_utils') if importlib.util.find_spec(n)])\n"
    )
    out = _run([py, "-c", probe], cwd=tmp_path).stdout.splitlines()
    assert out == ["[]", "[]"], out
    # .xlsx registers are read on site, where nothing can be pip-installed: openpyxl comes with it.
    xlsx = _run([py, "-c", "import openpyxl, et_xmlfile"], cwd=tmp_path)
    assert xlsx.returncode == 0, xlsx.stderr
    demo = _run([str(root / "bin" / "citynerve"), "demo", "--duration", "1"], cwd=tmp_path)
    assert demo.returncode == 1 and "citynerve[sim]" in demo.stderr, demo.stderr
    assert "install.py again with --sim" in demo.stderr, demo.stderr


def test_a_smoke_subset_of_the_tests_passes_against_the_installed_package(tmp_path: Path) -> None:
    # install_from_bundle(bundle, ..., sim=True), then the test tools with the install's pip (_EXTRA)
    installed = RELEASES.installed("wheel-smoke")
    root = installed.root
    assert installed.install.returncode == 0, installed.install.stdout + installed.install.stderr
    assert installed.pip is not None and installed.pip.returncode == 0, installed.pip
    py = str(root / "current" / "bin" / "python")
    checkout = tmp_path / "checkout"  # tests and pytest settings only: no gateway source beside them
    shutil.copytree(REPO / "tests", checkout / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", checkout / "pyproject.toml")
    shutil.copytree(
        REPO / "config", checkout / "config", ignore=shutil.ignore_patterns("__pycache__", "*.py")
    )
    where = _run([py, "-c", "import gateway, hil; print(gateway.__file__, hil.__file__)"], cwd=checkout)
    assert all(Path(p).is_relative_to(root.resolve()) for p in where.stdout.split()), where.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = _run(
        [py, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *SMOKE], cwd=checkout, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and sys.executable != py
