"""`citynerve store stats`: CliRunner and a real subprocess, with a gateway writing at the same time."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.cli import main
from citynerve.gateway.store import Outbox

CITYNERVE = [sys.executable, "-m", "citynerve.gateway.cli"]


def fill(db: Path) -> None:
    now = time.time()
    with Outbox(db) as ob:
        ob.append([Reading("m1", "flow", float(i), "m3/h", now - 60 + i) for i in range(10)], [])
        ob.append([], [Event("s1", "smoke", EventState.RAISED, Severity.CRITICAL, now - 5)])


def test_help_names_the_options() -> None:
    result = CliRunner().invoke(main, ["store", "stats", "--help"])
    assert result.exit_code == 0
    assert "--db" in result.output and "--json" in result.output and "--config" in result.output


def test_stats_json_from_db(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    fill(db)
    result = CliRunner().invoke(main, ["store", "stats", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["ok"] is True and doc["schema_version"] == 5 and doc["next_seq"] == 12
    lanes = {lane["lane"]: lane for lane in doc["lanes"]}
    assert lanes["telemetry"]["rows"] == 10 and lanes["event"]["rows"] == 1
    assert 55 <= lanes["telemetry"]["oldest_age_s"] < 120
    assert 4 <= lanes["event"]["oldest_age_s"] < 60
    assert lanes["telemetry"]["dropped"] == 0 and doc["file_bytes"] > 0


def test_stats_from_config_resolves_relative_path(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "var").mkdir(parents=True)
    fill(site / "var" / "gw.db")
    cfg = site / "gateway.toml"
    cfg.write_text('[gateway]\nid = "gw-1"\n\n[store]\npath = "var/gw.db"\nmax_bytes = 1048576\n')
    result = CliRunner().invoke(main, ["store", "stats", "-c", str(cfg), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["path"] == str(site / "var" / "gw.db")
    # Rich output for people.
    human = CliRunner().invoke(main, ["store", "stats", "-c", str(cfg)])
    assert human.exit_code == 0 and "telemetry" in human.output and "schema version 5" in human.output


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        ("[store\n", "not valid TOML"),
        ('[store]\nmax_bytes = "big"\n', "store.max_bytes"),
        ('[store]\npaht = "x.db"\n', "store.paht"),
        ("store = 3\n", "store: expected a table"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, config_text: str, expected: str) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(config_text)
    result = CliRunner().invoke(main, ["store", "stats", "-c", str(cfg)])
    assert result.exit_code == 2
    assert expected in result.output and "Traceback" not in result.output


def test_missing_or_foreign_db_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["store", "stats", "--db", str(tmp_path / "none.db"), "--json"])
    assert result.exit_code == 1 and json.loads(result.output) == {
        "ok": False, "path": str(tmp_path / "none.db"), "error": "no such file",
    }  # fmt: skip
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    result = CliRunner().invoke(main, ["store", "stats", "--db", str(other)])
    assert result.exit_code == 1 and "not a CityNerve outbox" in result.output
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"junk" * 2000)
    result = CliRunner().invoke(main, ["store", "stats", "--db", str(junk)])
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_stats_subprocess_while_a_writer_holds_the_file(tmp_path: Path) -> None:
    """The command reads a consistent snapshot while another process keeps committing."""
    db = tmp_path / "live.db"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from citynerve.gateway.api import Reading\n"
            "from citynerve.gateway.store import Outbox\n"
            "ob = Outbox(sys.argv[1])\n"
            "i = 0\n"
            "while True:\n"
            "    ob.append([Reading('m', 'p', float(i), '', time.time())] * 50, [])\n"
            "    i += 1\n"
            "    if i == 5: print('ready', flush=True)\n"
            "    time.sleep(0.002)\n",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        seen = []
        for _ in range(2):
            out = subprocess.run(
                [*CITYNERVE, "store", "stats", "--db", str(db), "--json"],
                capture_output=True, text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"},
            )  # fmt: skip
            assert out.returncode == 0, out.stderr
            doc = json.loads(out.stdout)
            tele = next(lane for lane in doc["lanes"] if lane["lane"] == "telemetry")
            # One snapshot: rows and next_seq agree (no acks here, so every seq is a row).
            assert tele["rows"] == doc["next_seq"] - 1
            seen.append(tele["rows"])
        assert seen == sorted(seen) and seen[-1] > seen[0]
    finally:
        writer.kill()
        writer.wait()


def test_peek_shows_the_next_rows_to_send(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    fill(db)
    with Outbox(db) as ob:
        ob.append([], [Event("s2", "smoke", EventState.CLEARED, Severity.CRITICAL, 1.0, message="[red]x[/]")])
    r = CliRunner().invoke(
        main, ["store", "peek", "--db", str(db), "--lane", "telemetry", "-n", "3", "--json"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert [row["seq"] for row in doc["rows"]] == [1, 2, 3]
    assert doc["rows"][0] == {
        "seq": 1, "lane": "telemetry", "ts": doc["rows"][0]["ts"], "device_id": "m1", "point": "flow",
        "value": 0.0, "unit": "m3/h", "quality": "good",
    }  # fmt: skip
    r = CliRunner().invoke(main, ["store", "peek", "--db", str(db), "--newest", "-n", "1", "--json"])
    (ev,) = json.loads(r.output)["rows"]
    assert ev["seq"] == 12 and ev["state"] == "cleared" and ev["severity"] == "critical"
    human = CliRunner().invoke(main, ["store", "peek", "--db", str(db)])
    assert human.exit_code == 0 and "[red]x[/]" in human.output  # device text is not rich markup
    missing = CliRunner().invoke(main, ["store", "peek", "--db", str(tmp_path / "no.db")])
    assert missing.exit_code == 1 and "no such file" in missing.output
