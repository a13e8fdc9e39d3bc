"""Each build of the node family (manhole, bedfoot, hydrant) as it is installed on a board.

The boot tests lay out a board's flash the way the README installs it: the build's manifest
installed by MicroPython's own `mip` (the interpreter's bundled one, which resolves a relative URL
against the manifest's folder, as `mpremote mip` does) from a loopback HTTP server standing in for
raw.githubusercontent.com, and the build's main.py copied to the top; then main.py runs under the
real MicroPython interpreter on the host stand-ins. So a manifest whose files do not resolve, or
that misses a module, fails here, not on a node in the street.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from citynerve.hil.sim.ble.firmware import DEVICE_FW, REPO, TESTS, micropython_binary, micropython_env

KEY = "231d39c1d7cc1ab1aee224cd096db932"
RETRY_MS = 600_000
ERRLOG = DEVICE_FW / "manhole" / "errlog.py"
README = DEVICE_FW / "README.md"
GITHUB = "github:<your-org>/citynerve/"  # the README's install URLs, <your-org> for the fork


@dataclass(frozen=True)
class Build:
    package: str  # the build's own package (its config loader is <package>/config.py)
    root: Path  # where its main.py and config.example.json live
    manifest: str  # its mip manifest, from the repository root (as in the README's github: URL)
    first_sleep_ms: int  # deep sleep after the first wake with the example config


BUILDS = {
    "manhole": Build("manhole", DEVICE_FW, "device_fw/package.json", 300_000),  # heartbeat
    "bedfoot": Build("bedfoot", DEVICE_FW / "bedfoot", "device_fw/bedfoot.json", 5_000),  # next look
    "hydrant": Build("hydrant", DEVICE_FW / "hydrant", "device_fw/hydrant.json", 10_000),  # next sample
}
ALL = pytest.mark.parametrize("build", list(BUILDS.values()), ids=list(BUILDS))


def _errors(log: Path) -> str:
    """error.log but the line a node writes at its first boot (no counter.dat yet: manhole/counter.py)."""
    lines = log.read_text().splitlines() if log.exists() else []
    return "\n".join(x for x in lines if not x.startswith("counter: counter.dat missing"))


def _error_log_max() -> int:
    found = re.search(r"^ERROR_LOG_MAX = (\d+)$", ERRLOG.read_text(), re.M)
    assert found, "manhole/errlog.py sets ERROR_LOG_MAX"
    return int(found.group(1))


def _package_files(build: Build) -> list[str]:
    """The files the manifest installs, as paths under device_fw. mip fetches a relative URL from
    the manifest's folder and writes it to the target under its destination name."""
    manifest = REPO / build.manifest
    files = []
    for dest, src in json.loads(manifest.read_text())["urls"]:
        source = (manifest.parent / src).resolve()
        assert source.is_file(), f"{build.manifest}: {src} resolves to {source}, which does not exist"
        assert source.relative_to(DEVICE_FW).as_posix() == dest, (dest, src)  # installed as it lives
        files.append(dest)
    return files


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def raw_github() -> Iterator[str]:
    """raw.githubusercontent.com/<org>/citynerve/HEAD/ on loopback: the checkout, read-only."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(REPO)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _mip_install(build: Build, lib: Path, raw_github: str) -> str:
    """`mip install --target <lib> github:<org>/citynerve/<manifest>` by the interpreter's own mip,
    its github: URLs pointed at the loopback server."""
    raw = "https://raw.githubusercontent.com/org/citynerve/HEAD/"
    code = (
        "import mip\n"
        "rewrite = mip._rewrite_url\n"
        "def local(url, branch=None):\n"
        f"    return rewrite(url, branch).replace({raw!r}, {raw_github!r})\n"
        "mip._rewrite_url = local\n"
        f"mip.install({'github:org/citynerve/' + build.manifest!r}, target={str(lib)!r})\n"
    )
    proc = subprocess.run(
        [micropython_binary(), "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Error" not in out, out
    return out


def _install(build: Build, board: Path, raw_github: str) -> None:
    """The board's flash after `mpremote mip install --target /lib <manifest>` and `cp main.py`."""
    _mip_install(build, board / "lib", raw_github)
    installed = {p.relative_to(board / "lib").as_posix() for p in (board / "lib").rglob("*") if p.is_file()}
    assert installed == set(_package_files(build))
    shutil.copy(build.root / "main.py", board / "main.py")


def _boot(board: Path, prelude: str = "") -> str:
    """Run the board's main.py; `prelude` runs first (to change the chip the stand-ins model)."""
    env = {**os.environ, "MICROPYPATH": os.pathsep.join((str(TESTS / "host"), str(board / "lib")))}
    run = ["-c", prelude + "\nexec(open('main.py').read())"] if prelude else [str(board / "main.py")]
    proc = subprocess.run(
        [micropython_binary(), *run],
        cwd=str(board),
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.stdout + proc.stderr  # MicroPython prints tracebacks on stdout


def _example(build: Build) -> dict[str, object]:
    return json.loads((build.root / "config.example.json").read_text())


@ALL
def test_main_boots_and_sleeps(build: Build, tmp_path: Path, raw_github: str) -> None:
    # A good config: one wake, then deep sleep (the host stand-in raises DeepSleep).
    _install(build, tmp_path, raw_github)
    (tmp_path / "config.json").write_text(json.dumps({**_example(build), "key": KEY}))
    out = _boot(tmp_path)
    log = tmp_path / "error.log"
    assert f"DeepSleep: {build.first_sleep_ms}\n" in out, out + (log.read_text() if log.exists() else "")
    assert not _errors(log)
    assert "counter.dat missing, counter starts at 1" in log.read_text()  # a new (or erased) node's
    assert (tmp_path / "counter.dat").read_text() == "65"  # the first block reserved before use
    _boot(tmp_path)
    assert log.read_text().count("counter.dat missing") == 1  # once: the next wake has the file


@ALL
def test_main_with_a_broken_config_logs_and_sleeps(build: Build, tmp_path: Path, raw_github: str) -> None:
    _install(build, tmp_path, raw_github)
    (tmp_path / "config.json").write_text('{"key": "not-a-key"}')
    out = _boot(tmp_path)
    assert f"DeepSleep: {RETRY_MS}\n" in out, out  # retry later, not the REPL
    assert "ConfigError" not in out, out  # the error went to the log, not out of main()
    log = (tmp_path / "error.log").read_text()
    assert "ConfigError" in log and "key" in log, log


@ALL
def test_main_with_the_core_missing_sleeps(build: Build, tmp_path: Path, raw_github: str) -> None:
    # An install that lost the core (an interrupted `mip install`, a full flash): main.py cannot
    # even log, but it must still deep-sleep and try again, not stop in the REPL with BLE on.
    _install(build, tmp_path, raw_github)
    (tmp_path / "config.json").write_text(json.dumps({**_example(build), "key": KEY}))
    shutil.rmtree(tmp_path / "lib" / "manhole")
    out = _boot(tmp_path)
    assert f"DeepSleep: {RETRY_MS}\n" in out, out  # the stand-in's deepsleep raises DeepSleep
    assert "ImportError" not in out, out
    assert not (tmp_path / "error.log").exists()


@ALL
def test_main_over_an_older_core_without_the_boot_module_logs_and_sleeps(
    build: Build, tmp_path: Path, raw_github: str
) -> None:
    # main.py copied alone onto a board whose core predates manhole/boot.py: it slept for ever
    # without a word in error.log, although the core's errlog.py was there to say why.
    _install(build, tmp_path, raw_github)
    (tmp_path / "config.json").write_text(json.dumps({**_example(build), "key": KEY}))
    (tmp_path / "lib" / "manhole" / "boot.py").unlink()
    out = _boot(tmp_path)
    assert f"DeepSleep: {RETRY_MS}\n" in out, out
    assert "boot" in (tmp_path / "error.log").read_text()


@ALL
def test_main_error_log_stays_capped(build: Build, tmp_path: Path, raw_github: str) -> None:
    # A node with a bad config retries every 10 minutes for months: error.log must not fill the
    # flash. It is emptied once over ERROR_LOG_MAX, so it stays under the cap plus one traceback.
    cap = _error_log_max()
    _install(build, tmp_path, raw_github)
    (tmp_path / "config.json").write_text('{"key": "not-a-key"}')
    log = tmp_path / "error.log"
    log.write_text("old\n" * (cap // 4))  # a log at its cap
    assert log.stat().st_size == cap
    sizes = []
    for _ in range(4):
        out = _boot(tmp_path)
        assert f"DeepSleep: {RETRY_MS}\n" in out, out
        sizes.append(log.stat().st_size)
    assert "old" not in log.read_text()
    one = sizes[1]  # the log over its cap was started afresh: one traceback
    assert 0 < one < 1024, sizes
    # at the cap (not over it) the first failure is still appended, the next starts afresh,
    # and the later ones grow the log again towards the cap
    assert sizes == [cap + one, one, 2 * one, 3 * one], sizes


@pytest.mark.parametrize("build", [BUILDS["manhole"], BUILDS["hydrant"]], ids=["manhole", "hydrant"])
def test_main_with_a_wake_pin_that_cannot_wake_the_chip_logs_and_sleeps_on_the_timer(
    build: Build, tmp_path: Path, raw_github: str
) -> None:
    # GPIO 5 is no RTC GPIO: esp32.wake_on_ext1 raises ValueError("invalid pin"). main.py must
    # still deep-sleep (the timer alone), not end in the REPL with BLE on.
    _install(build, tmp_path, raw_github)
    (tmp_path / "config.json").write_text(json.dumps({**_example(build), "key": KEY, "pins": {"tamper": 5}}))
    out = _boot(tmp_path)
    assert f"DeepSleep: {build.first_sleep_ms}\n" in out, out
    assert "invalid pin" in (tmp_path / "error.log").read_text()


@ALL
def test_main_on_a_chip_without_ext1_wake_sleeps_on_the_timer(
    build: Build, tmp_path: Path, raw_github: str
) -> None:
    # An ESP32-C3 has no esp32.wake_on_ext1 (AttributeError): sleep on the timer, log it.
    _install(build, tmp_path, raw_github)
    (tmp_path / "config.json").write_text(json.dumps({**_example(build), "key": KEY}))
    out = _boot(tmp_path, prelude="import esp32\ndel esp32.wake_on_ext1")
    assert f"DeepSleep: {build.first_sleep_ms}\n" in out, out
    log = tmp_path / "error.log"
    if build.package == "bedfoot":  # wakes on the timer anyway
        assert not _errors(log)
    else:
        assert "wake_on_ext1" in log.read_text()


@ALL
def test_a_wake_pin_error_is_logged_at_power_on_not_at_every_wake(
    build: Build, tmp_path: Path, raw_github: str
) -> None:
    # A C3 (no EXT1) or a pin that is no RTC GPIO fails the same way at every wake: logging it each
    # time wrote the flash every heartbeat (every 10 s during an alarm). Only a power-on or a reset
    # logs it; a wake from deep sleep sleeps on the timer and writes nothing.
    _install(build, tmp_path, raw_github)
    (tmp_path / "config.json").write_text(json.dumps({**_example(build), "key": KEY}))
    no_ext1 = "import esp32\ndel esp32.wake_on_ext1\nimport machine\n"
    for _ in range(3):
        out = _boot(tmp_path, prelude=no_ext1 + "machine.SIM.reset_cause = machine.DEEPSLEEP_RESET")
        assert "DeepSleep: " in out, out
    assert not _errors(tmp_path / "error.log")
    out = _boot(tmp_path, prelude=no_ext1)  # power-on: the installer's boot
    assert "DeepSleep: " in out, out
    if build.package != "bedfoot":  # the bed-foot node wakes on the timer anyway
        assert "wake_on_ext1" in (tmp_path / "error.log").read_text()


@ALL
def test_example_config_loads_through_the_build_loader(build: Build, tmp_path: Path) -> None:
    # The example is what the build's own config loader accepts, and says what the defaults are.
    example = build.root / "config.example.json"
    code = (
        "import json\n"
        f"from {build.package} import config\n"
        f"c = config.load({str(example)!r})\n"
        f"d = config.validate({{'key': {KEY!r}}})\n"
        "print(len(c.pop('key_bytes')))\n"
        "d.pop('key_bytes'); c.pop('key'); d.pop('key')\n"
        "print(json.dumps(c)); print(json.dumps(d))\n"
    )
    proc = subprocess.run(
        [micropython_binary(), "-c", code],
        cwd=str(tmp_path),
        env=micropython_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    n, loaded, defaults = proc.stdout.splitlines()
    assert n == "16"
    assert json.loads(loaded) == json.loads(defaults)  # every value in the example is the default


_IMPORT = re.compile(
    r"^\s*(?:from\s+(\w+)(?:\.(\w+))?\s+import\s+([\w \t,]+)|import\s+(\w+)(?:\.(\w+))?)", re.M
)
PACKAGES = ("manhole", "bedfoot", "hydrant")


def _imports(path: Path) -> set[str]:
    """The firmware modules a file imports (anywhere in it, lazily too), as paths under device_fw."""
    out: set[str] = set()
    for pkg, sub, names, ipkg, isub in _IMPORT.findall(path.read_text()):
        pkg, sub = (pkg, sub) if pkg else (ipkg, isub)
        if pkg not in PACKAGES:
            continue
        out.add(f"{pkg}/__init__.py")
        if sub:
            out.add(f"{pkg}/{sub}.py")
        elif names:  # from pkg import a, b as c: modules of the package (or names in __init__)
            for name in names.split(","):
                mod = name.split()[0] if name.strip() else ""
                if mod and (DEVICE_FW / pkg / f"{mod}.py").exists():
                    out.add(f"{pkg}/{mod}.py")
    return out


@ALL
def test_readme_installs_the_build_from_its_manifest(build: Build) -> None:
    # The README's command is what the tests install: `mpremote mip install --target /lib <url>`.
    urls = re.findall(r"mip install --target /lib (github:\S+?\.json)", README.read_text())
    assert GITHUB + build.manifest in urls, urls
    assert all(u[len(GITHUB) :] in {b.manifest for b in BUILDS.values()} for u in urls), urls


@ALL
def test_package_json_lists_every_module_the_build_imports(build: Build) -> None:
    listed = _package_files(build)
    assert len(listed) == len(set(listed))
    for name in listed:
        assert (DEVICE_FW / name).is_file(), name
    needed: set[str] = set()
    todo = [build.root / "main.py"]
    while todo:
        for mod in _imports(todo.pop()) - needed:
            needed.add(mod)
            todo.append(DEVICE_FW / mod)
    assert "manhole/errlog.py" in needed  # main.py logs through the shared core module
    assert needed <= set(listed), sorted(needed - set(listed))


@ALL
def test_provisioned_node_boots_and_its_entry_names_the_build_profile(
    build: Build, tmp_path: Path, raw_github: str
) -> None:
    # device_fw/tools/provision.py --build <b>: the config it writes is what that build's main.py
    # boots with, and the [[devices]] entry it prints names the profile its adverts decode into.
    import sys
    import tomllib

    from citynerve.drivers.bthome import BTHomeDevice

    out_dir = tmp_path / "out"
    printed = subprocess.run(
        [
            sys.executable,
            str(DEVICE_FW / "tools" / "provision.py"),
            "--build",
            build.package,
            "--id",
            f"{build.package}-0001",
            "--mac",
            "a4:c1:38:00:00:01",
            "--address-code",
            "310105001001",
            "--out",
            str(out_dir),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    board = tmp_path / "board"
    board.mkdir()
    _install(build, board, raw_github)
    shutil.copy(out_dir / "config.json", board / "config.json")
    assert f"DeepSleep: {build.first_sleep_ms}\n" in _boot(board)
    assert not _errors(board / "error.log")
    entry = tomllib.loads("\n".join(x for x in printed.splitlines() if not x.startswith("#")))
    dev = BTHomeDevice.model_validate(entry["devices"][0])
    profile = {"manhole": "bthome-manhole-cover", "bedfoot": "bthome-bed-occupancy"}
    assert dev.profile == profile.get(build.package, "bthome-fire-hydrant")
    assert dev.poll_interval_s == _example(build)["heartbeat_interval_s"]
    key = (out_dir / f"{build.package}-0001.key").read_text().strip()
    assert json.loads((out_dir / "config.json").read_text())["key"] == key
