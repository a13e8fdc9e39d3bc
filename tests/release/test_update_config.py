"""`update apply|rollback` check the gateway's config first: a missing or invalid config is one line
naming its issues (exit 1), before any bundle is unpacked or installed and before the update state
changes; it used to be a ConfigError traceback from the switch, after the install."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from citynerve.gateway.cli import main

STATE = {
    "phase": "confirmed",
    "from": "0.1.0",
    "to": "0.2.0",
    "history": [{"from": "0.1.0", "to": "0.2.0", "phase": "confirmed"}],
}


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An install root with two releases, 0.2.0 current, after a confirmed update from 0.1.0."""
    r = tmp_path / "opt"
    for version in ("0.1.0", "0.2.0"):
        rel = r / "releases" / version
        (rel / "bin").mkdir(parents=True)
        info = {"version": version, "arch": "x86_64", "extras": []}
        (rel / "citynerve-release.json").write_text(json.dumps(info))
        (rel / "bin" / "python").symlink_to(sys.executable)
    os.symlink("releases/0.2.0", r / "current")
    os.symlink("releases/0.2.0", r / "known-good")
    (r / "update").mkdir()
    (r / "update" / "state.json").write_text(json.dumps(STATE))
    return r


def _configs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    bad = tmp_path / "bad.toml"
    bad.write_text("gateway = 3\n")
    return {
        "missing": (tmp_path / "nope.toml", "nope.toml: no such file"),
        "invalid": (bad, "bad.toml: gateway:"),
    }


@pytest.mark.parametrize("which", ["missing", "invalid"])
def test_rollback_with_a_bad_config_is_one_line(root: Path, tmp_path: Path, which: str) -> None:
    config, expected = _configs(tmp_path)[which]
    before = (root / "update" / "state.json").read_text()
    r = cli("update", "rollback", "--root", str(root), "-c", str(config), "--service", "process")
    assert r.exit_code == 1, r.output
    out = " ".join(r.output.split())
    assert "the config does not load" in out and expected in out, out
    assert "Traceback" not in r.output
    assert (root / "update" / "state.json").read_text() == before
    assert os.readlink(root / "current") == "releases/0.2.0"


@pytest.mark.parametrize("which", ["missing", "invalid"])
def test_apply_checks_the_config_before_the_bundle(root: Path, tmp_path: Path, which: str) -> None:
    config, expected = _configs(tmp_path)[which]
    bundle = tmp_path / "citynerve-0.3.0-x86_64.tar.gz"
    bundle.write_bytes(b"not looked at")
    r = cli("update", "apply", str(bundle), "--root", str(root), "-c", str(config), "--service", "process")
    assert r.exit_code == 1, r.output
    out = " ".join(r.output.split())
    assert "the config does not load" in out and expected in out, out
    assert sorted(p.name for p in (root / "releases").iterdir()) == ["0.1.0", "0.2.0"]
    assert not (root / "update" / "incoming").exists()
