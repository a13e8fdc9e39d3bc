"""The field tools read what they are given within bounds, like `config check` does: a config nested
thousands deep is a typed error for `devices remove` and is left out of `diag bundle` (both raised a
RecursionError traceback), a `devices add --set` value nested too deeply or too long exits 2, and a
support bundle takes the end of a large log file without reading the rest."""

from __future__ import annotations

import json
import os
import tarfile
import tracemalloc
from pathlib import Path

from click.testing import CliRunner, Result

from citynerve.gateway.cli import main
from citynerve.gateway.commissioning.bundle import LOG_TAIL_BYTES, build_bundle

MINIMAL = """[gateway]
id = "gw-1"
org = { city = "310100", district = "310106", street = "310106013" }
[control]
socket = "var/gw.sock"
[store]
path = "var/outbox.db"
"""


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def _deep(tmp_path: Path) -> Path:
    deep = tmp_path / "deep.toml"
    deep.write_text(MINIMAL + "a = " + "[" * 3000 + "]" * 3000 + "\n")
    return deep


def test_devices_remove_on_a_config_nested_too_deeply_is_a_typed_error(tmp_path: Path) -> None:
    deep = _deep(tmp_path)
    r = _cli("devices", "remove", "-c", str(deep), "wm-1", "--no-reload")
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    # A long tmp path (xdist's: .../popen-gw0/...) is wrapped mid-word: compare without whitespace.
    assert "".join(f"{deep}: not valid TOML: nested too deeply".split()) in "".join(r.output.split())


def test_bundle_of_a_config_nested_too_deeply_leaves_it_out(tmp_path: Path) -> None:
    deep = _deep(tmp_path)
    out = tmp_path / "b.tar.gz"
    r = _cli("diag", "bundle", "-c", str(deep), "-o", str(out), "--json")
    assert r.exit_code == 0, r.output
    missing = json.loads(r.output)["missing"]["config"]
    assert missing.startswith(f"{deep}: not valid TOML: nested too deeply") and "left out" in missing
    with tarfile.open(out) as tar:
        assert "config/gateway.toml" not in tar.getnames() and "manifest.json" in tar.getnames()


def test_devices_add_set_values_nested_too_deeply_or_too_long_exit_2(config_path: Path) -> None:
    before = config_path.read_text()
    add = ["devices", "add", "-c", str(config_path), "--id", "wm-9", "--bus", "tcp-1"]
    add += ["--profile", "modbus-water-meter", "--address", "9", "--no-reload"]
    r = _cli(*add, "--set", "meter_type=" + "[" * 1200 + "]" * 1200)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert "--set meter_type: value nested too deeply" in r.output
    r = _cli(*add, "--set", "meter_type=" + "x" * 5000)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert "--set meter_type: value of 5000 characters (at most 4096)" in r.output
    assert config_path.read_text() == before


def test_bundle_reads_only_the_end_of_a_large_log_file(tmp_path: Path) -> None:
    """A log 16 times the tail bound (sparse: no disk used) goes in as its last LOG_TAIL_BYTES, and
    the bundle's memory peak stays near one tail: the file is not read whole first."""
    config = tmp_path / "gw.toml"
    config.write_text(MINIMAL)
    log = tmp_path / "big.log"
    size = 16 * LOG_TAIL_BYTES
    with log.open("wb") as f:
        f.truncate(size - 16)
        f.seek(size - LOG_TAIL_BYTES)  # a line ends where the tail starts (its cut first line goes)
        f.write(b"\n")
        f.seek(size - 16)
        f.write(b"last line: end\n".ljust(16, b"."))
    assert os.path.getsize(log) == size
    out = tmp_path / "b.tar.gz"
    tracemalloc.start()
    try:
        report = build_bundle(config, out, log_file=log, journal_unit="citynerve-no-such-unit-test")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "logs/big.log" in report.members, report.missing
    assert peak < size // 2, peak  # reading the whole file first peaks above `size`
    with tarfile.open(out) as tar:
        member = tar.extractfile("logs/big.log")
        assert member is not None
        data = member.read()
    assert len(data) == LOG_TAIL_BYTES - 1 and data.endswith(b"last line: end\n.")


def test_bundle_refuses_a_log_that_is_not_a_regular_file(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(MINIMAL)
    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)  # opening it would wait for a writer for ever
    report = build_bundle(config, tmp_path / "b.tar.gz", log_file=fifo, journal_unit="citynerve-no-such-unit")
    assert "not a regular file" in report.missing["logs"]
