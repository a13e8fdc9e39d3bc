"""`config rollback` checks the snapshot before it writes anything: a snapshot that no longer loads
(here: its device names a profile that is gone) is refused with the issue, exit 2, and the config,
the history and its log stay as they were."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from citynerve.gateway.cli import main
from citynerve.gateway.remoteconfig import ConfigHistory

from .test_config_owner import CONFIG


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_snapshot_that_does_not_load_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG, encoding="utf-8")
    hist = ConfigHistory(config)
    hist.snapshot(CONFIG.replace('profile = "modbus-water-meter"', 'profile = "gone-meter"'), "v1")
    before = sorted(p.name for p in hist.dir.iterdir()), hist.log(), hist.snapshots()
    r = cli("config", "rollback", "v1", "-c", str(config), "--no-reload")
    assert r.exit_code == 2, r.output
    out = " ".join(r.output.split())  # the console wraps long lines
    assert "devices[0] (id 'wm-2').profile: no profile 'gone-meter'" in out
    # A long tmp path (xdist's: .../popen-gw0/...) is wrapped mid-word: compare without whitespace.
    assert "".join(f"{config} was not changed".split()) in "".join(out.split())
    assert "Traceback" not in r.output
    assert config.read_text(encoding="utf-8") == CONFIG
    assert (sorted(p.name for p in hist.dir.iterdir()), hist.log(), hist.snapshots()) == before


def test_a_snapshot_that_loads_is_put_back(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG, encoding="utf-8")
    hist = ConfigHistory(config)
    hist.snapshot(CONFIG.replace("wm-2", "wm-9"), "v1")
    r = cli("config", "rollback", "v1", "-c", str(config), "--no-reload")
    assert r.exit_code == 0, r.output
    assert "wm-9" in config.read_text(encoding="utf-8")
    assert [e["what"] for e in hist.log()] == ["rollback"]
