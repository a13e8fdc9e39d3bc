"""A broker password written into a URL never reaches a message: `config check`, the real
`citynerve run` (its stderr is the journal under systemd), the log formatters, nor the support
bundle's copy of the journal or log file."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynerve.gateway.cli import main
from citynerve.gateway.commissioning.bundle import build_bundle
from citynerve.gateway.logs import setup_logging
from tests.config.test_config_errors import HEAD

REPO = Path(__file__).resolve().parents[2]
SECRET = "S3cretPassw0rd"

BROKERS = [
    f'["mqtt://gw:{SECRET}@127.0.0.1:1883"]',  # refused: credentials in the URL
    f'["http://gw:{SECRET}@127.0.0.1:1883"]',  # refused: scheme
    f'["mqtt://gw:{SECRET}@127.0.0.1:99999"]',  # refused: port
    f'["mqtt://gw:{SECRET}@127.0.0.1/x"]',  # refused: a path
    f'["mqtt://gw:p@ss{SECRET}@127.0.0.1"]',  # an @ in the password
    f'["mqtt://gw:pa/ss{SECRET}@127.0.0.1"]',  # a / in the password: no longer parses as userinfo
    f'["mqtt://{SECRET}@127.0.0.1"]',  # a token as the user name
    f'"mqtt://gw:{SECRET}@127.0.0.1"',  # a string, not a list: the found value is shown
]


def leaky_config(tmp_path: Path, brokers: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(
        HEAD + '[store]\npath = "gw.db"\n[control]\nsocket = "gw.sock"\n'
        f'[upstream]\nbrokers = {brokers}\nusername = "gw"\n'
    )
    return path


@pytest.mark.parametrize("brokers", BROKERS)
def test_config_check_names_the_broker_without_its_password(tmp_path: Path, brokers: str) -> None:
    result = CliRunner().invoke(main, ["config", "check", str(leaky_config(tmp_path, brokers))])
    assert result.exit_code == 2, result.output
    assert "upstream.brokers" in result.output
    assert SECRET not in result.output and "ss" + SECRET[:4] not in result.output


def test_config_check_still_says_which_broker_and_why(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["config", "check", str(leaky_config(tmp_path, BROKERS[0]))])
    assert "mqtt://<redacted>@127.0.0.1:1883" in result.output
    assert "credentials do not belong in the URL" in result.output


def test_run_prints_no_password(tmp_path: Path) -> None:
    """The real `citynerve run`: what it writes is what systemd puts in the journal."""
    path = leaky_config(tmp_path, BROKERS[0])
    proc = subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode != 0
    assert "credentials do not belong in the URL" in proc.stdout + proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_lines_lose_url_passwords(fmt: str) -> None:
    stream = io.StringIO()
    setup_logging("info", fmt, stream)
    try:
        logging.getLogger("citynerve.test").warning("broker %s refused", f"mqtt://gw:{SECRET}@h:1883")
    finally:
        logging.getLogger().handlers.clear()
    line = stream.getvalue()
    assert SECRET not in line and "mqtt://gw:<redacted>@h:1883" in line
    if fmt == "json":
        assert json.loads(line)["msg"].startswith("broker")


def _bundle_logs(out: Path) -> dict[str, bytes]:
    with tarfile.open(out) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.name.startswith("logs/")
        }


LOG = (
    f"  gw.toml: upstream.brokers: broker URL 'mqtt://gw:{SECRET}@127.0.0.1:1883': refused\n"
    f'{{"msg": "connect to mqtts://ops:p@ss{SECRET}@10.0.0.2:8883 failed"}}\n'
    "plain line \xff kept\n"
).encode("utf-8", "surrogateescape")


def test_bundle_of_a_log_file_holding_a_url_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no journalctl: the --log-file is what goes in
    log = tmp_path / "run.log"
    log.write_bytes(LOG + b"\xfe raw byte\n")
    out = tmp_path / "b.tar.gz"
    build_bundle(leaky_config(tmp_path, BROKERS[0]), out, log_file=log)
    [data] = _bundle_logs(out).values()
    assert SECRET.encode() not in data and b"ss" + SECRET[:4].encode() not in data
    assert b"mqtt://gw:<redacted>@127.0.0.1:1883" in data
    assert b"\xfe raw byte\n" in data  # other bytes as they were


def test_bundle_of_a_journal_holding_a_url_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "journalctl"  # stands in for journald: prints the unit's lines as it would
    (tmp_path / "journal.txt").write_bytes(LOG + b"panel line in GB18030 \xbb\xf0\xbe\xaf\n")  # not UTF-8
    fake.write_text(f"#!/bin/sh\nexec /bin/cat {tmp_path / 'journal.txt'}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    out = tmp_path / "b.tar.gz"
    build_bundle(leaky_config(tmp_path, BROKERS[0]), out)
    data = _bundle_logs(out)["logs/journal.txt"]
    assert SECRET.encode() not in data and b"<redacted>@10.0.0.2:8883" in data
    assert data.endswith(b"GB18030 \xbb\xf0\xbe\xaf\n")  # bytes as journald gave them


def test_bundle_of_a_long_log_cut_inside_a_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the log's end goes in: a line cut after `mqtt://` has no scheme left to find it by."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("citynerve.gateway.commissioning.bundle.LOG_TAIL_BYTES", 1000)
    line = f"refused mqtt://gw:{SECRET}@127.0.0.1:1883\n".encode()
    log = tmp_path / "run.log"
    kept = line[line.index(b"S3cret") + 2 :]  # the cut falls in the password
    log.write_bytes(b"x" * 990 + line + b"y" * (1000 - len(kept) - 11) + b"\nlast line\n")
    out = tmp_path / "b.tar.gz"
    build_bundle(leaky_config(tmp_path, BROKERS[0]), out, log_file=log)
    [data] = _bundle_logs(out).values()
    assert SECRET[-6:].encode() not in data and data.endswith(b"\nlast line\n")
