"""Old releases are removed before an update installs another: a box its platform updates every
month, never visited, must not fill its SD card (80 MB a release) with releases nothing needs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.release import update
from citynerve.gateway.release.bundle import RELEASE_INFO, switch_link
from citynerve.gateway.release.service import ServiceManager


def release(root: Path, version: str, *, complete: bool = True) -> Path:
    folder = root / "releases" / version
    (folder / "lib").mkdir(parents=True)
    (folder / "lib" / "site.py").write_text("# a venv's files\n")
    if complete:
        (folder / RELEASE_INFO).write_text(json.dumps({"version": version}))
    return folder


def installed(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "releases").iterdir())


class NoService(ServiceManager):
    """Never reached: the bundle is refused before anything is switched."""

    def start(self) -> None:
        raise AssertionError("not reached")

    stop = restart = start

    def is_running(self) -> bool:
        return True

    def spawn_watchdog(self, argv: list[str], log: Path) -> None:
        raise AssertionError("not reached")

    def describe(self) -> dict[str, Any]:
        return {"kind": "none"}


def monthly_updates(root: Path, months: int) -> None:
    """`months` confirmed updates 1.0.0 -> 1.1.0 -> ..., every release left installed."""
    history = []
    for month in range(months + 1):
        release(root, f"1.{month}.0")
        if month:
            history.append({"from": f"1.{month - 1}.0", "to": f"1.{month}.0", "phase": "confirmed"})
    switch_link(root / "current", f"releases/1.{months}.0")
    switch_link(root / "known-good", f"releases/1.{months}.0")
    update.write_state(root, {"phase": "confirmed", "history": history})


def test_an_update_removes_the_releases_nothing_needs_first(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    monthly_updates(root, 24)
    site = tmp_path / "site"
    site.mkdir()
    config = site / "gw.toml"
    org = 'org = { city = "310100", district = "310106", street = "310106013" }'
    config.write_text(f'[gateway]\nid = "gw-1"\n{org}\n[store]\npath = "{site / "gw.db"}"\n')
    bundle = tmp_path / "citynerve-1.25.0-x86_64.tar.gz"
    bundle.write_bytes(b"not a bundle")
    with pytest.raises(update.UpdateError, match="refused"):
        update.apply(bundle, root=root, config=config, service=NoService(), wait=False)
    # current and known-good (1.24.0) and the release rollback goes back to (1.23.0)
    assert installed(root) == ["1.23.0", "1.24.0"]
    assert update.rollback_target(root, update.read_state(root)) == "1.23.0"


def test_pruning_keeps_what_runs_and_what_a_link_names(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    monthly_updates(root, 3)
    running = release(root, "0.9.0")  # an operator's shell runs `citynerve update apply` from it
    release(root, "1.4.0", complete=False)  # a removal or an install a power cut cut short
    assert update.prune_releases(root, running=running) == ["1.0.0", "1.1.0", "1.4.0"]
    assert installed(root) == ["0.9.0", "1.2.0", "1.3.0"]
    # An incomplete release a link names is left for a person to look at, as install_release does.
    (root / "releases" / "1.3.0" / RELEASE_INFO).unlink()
    switch_link(root / "known-good", "releases/1.2.0")
    assert update.prune_releases(root, running=Path(sys.prefix)) == ["0.9.0"]
    assert installed(root) == ["1.2.0", "1.3.0"]


def test_pruning_a_root_without_releases_removes_nothing(tmp_path: Path) -> None:
    assert update.prune_releases(tmp_path) == []
