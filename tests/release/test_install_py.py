"""The offline installer (`python3 install.py` in an unpacked bundle), run as on site: a --key it
cannot read or that is not a PEM public key is one line, exit 2, nothing installed; so is a bundle
whose gateway trusts another release key than --key; running it again mends a first install that
was interrupted after `current` was made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from citynerve.gateway.release import bundle as fmt

from .conftest import ReleaseKey
from .test_bundle_verify import make_bundle


def install_py(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(folder / "install.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("which", ["missing", "folder", "not_pem", "damaged_pem"])
def test_a_key_that_cannot_be_used_is_one_line(tmp_path: Path, release_key: ReleaseKey, which: str) -> None:
    folder = make_bundle(tmp_path / "usb stick", release_key)
    key = tmp_path / "usb stick" / "release-key.pem"
    expected = {
        "missing": f"refused: --key {key}: cannot read: No such file or directory",
        "folder": f"refused: --key {key}: cannot read: Is a directory",
        "not_pem": "refused: public key: not a PEM public key",
        "damaged_pem": "refused: public key: not a PEM public key",
    }[which]
    if which == "folder":
        key.mkdir()
    elif which == "not_pem":
        key.write_bytes(b"\x00\x01 a photo, not a key")
    elif which == "damaged_pem":
        key.write_text("-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n")
    root = tmp_path / "opt"
    proc = install_py(folder, "--root", str(root), "--key", str(key))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == expected
    assert not root.exists()


def test_running_it_again_mends_an_interrupted_first_install(tmp_path: Path, release_key: ReleaseKey) -> None:
    folder = make_bundle(tmp_path, release_key)
    root = tmp_path / "opt"
    # Power cut after the release was complete and `current` made: no known-good, no bin/citynerve.
    release = root / "releases" / "9.9.9"
    (release / "bin").mkdir(parents=True)
    (release / fmt.RELEASE_INFO).write_text(json.dumps({"version": "9.9.9", "arch": "x86_64", "extras": []}))
    os.symlink("releases/9.9.9", root / "current")
    proc = install_py(folder, "--root", str(root), "--key", str(release_key.public))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.readlink(root / "current") == "releases/9.9.9"
    assert os.readlink(root / "known-good") == "releases/9.9.9"
    assert os.readlink(root / "bin" / "citynerve") == "../current/bin/citynerve"
    assert proc.stdout.startswith("9.9.9 is the current release (extras: none)"), proc.stdout


def test_a_bundle_whose_gateway_trusts_another_key_is_refused(
    tmp_path: Path, release_key: ReleaseKey
) -> None:
    # Signed with the key given to install.py, but the gateway inside checks updates against another
    # one (`citynerve update key`): installing it would leave a gateway that refuses its updates.
    other = ReleaseKey(tmp_path)
    folder = make_bundle(tmp_path / "usb stick", release_key, trusted=other)
    root = tmp_path / "opt"
    proc = install_py(folder, "--root", str(root), "--key", str(release_key.public))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("refused: release key: the gateway in this bundle trusts another")
    assert not (root / "releases").exists() and not (root / "current").exists()


def _pip_requirements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record install_release's steps instead of running them: (venv or pip target, requirement)."""
    calls: list[tuple[str, str]] = []

    def run(cmd: list[str], step: str) -> None:
        if cmd[1:3] == ["-m", "venv"]:
            Path(cmd[3]).mkdir(parents=True)
            calls.append(("venv", cmd[3]))
        else:
            calls.append((str(Path(cmd[0]).parents[1]), cmd[-1]))

    monkeypatch.setattr(fmt, "_run", run)
    return calls


def _manifest(extras: tuple[str, ...]) -> fmt.Manifest:
    return fmt.Manifest(name="citynerve", version="9.9.9", arch="x86_64", python=("3.11",), extras=extras,
                        files={})  # fmt: skip


def test_every_release_gets_the_register_extra_the_bundle_ships(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # openpyxl (.xlsx registers) cannot be pip-installed on site: a bundle that ships it installs it.
    calls = _pip_requirements(monkeypatch)
    release = fmt.install_release(tmp_path / "bundle", _manifest(("sim", "register")), tmp_path / "opt")
    assert calls[-1] == (str(release), "citynerve[register]==9.9.9")
    assert fmt.release_info(release) == {"version": "9.9.9", "arch": "x86_64", "extras": ["register"]}
    old = fmt.install_release(tmp_path / "bundle", _manifest(("sim",)), tmp_path / "old")  # an older bundle
    assert calls[-1] == (str(old), "citynerve==9.9.9")


def test_running_it_again_with_sim_adds_the_simulators_to_the_installed_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The guide's advice for the demo and for a bumble HCI dongle: install.py again with --sim (a
    # complete release was kept as it was, without them).
    calls = _pip_requirements(monkeypatch)
    manifest = _manifest(("sim", "register"))
    release = fmt.install_release(tmp_path / "bundle", manifest, tmp_path / "opt")
    calls.clear()
    assert fmt.install_release(tmp_path / "bundle", manifest, tmp_path / "opt", extras=("sim",)) == release
    assert calls == [(str(release), "citynerve[register,sim]==9.9.9")]
    assert fmt.release_info(release)["extras"] == ["register", "sim"]  # type: ignore[index]
    calls.clear()
    fmt.install_release(tmp_path / "bundle", manifest, tmp_path / "opt", extras=("sim",))
    assert calls == []  # nothing missing: kept as it is
