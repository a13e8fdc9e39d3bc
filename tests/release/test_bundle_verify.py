"""Bundles are refused unless their signature and every file's SHA-256 verify (fast: a small
bundle of made-up files, signed the way hil/tools/bundle.py signs)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from citynerve.gateway import shipped
from citynerve.gateway.release import bundle as fmt
from citynerve.gateway.service.unit import render_unit
from citynerve.hil.tools.bundle import BuildError, build_bundle, sign_manifest

from .conftest import REPO, ReleaseKey


def fake_wheel(path: Path, trusted: ReleaseKey) -> Path:
    """A zip with only the release key the gateway trusts, where the real wheel carries it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(fmt.WHEEL_RELEASE_KEY, trusted.public.read_bytes())
    return path


def make_bundle(
    tmp: Path, key: ReleaseKey, version: str = "9.9.9", *, trusted: ReleaseKey | None = None
) -> Path:
    """A bundle signed with `key` whose (fake) gateway wheel trusts `trusted` (default: `key`)."""
    folder = tmp / f"citynerve-{version}-x86_64"
    (folder / "wheels").mkdir(parents=True)
    shutil.copy2(fmt.__file__, folder / "install.py")
    fake_wheel(folder / "wheels" / f"citynerve-{version}-py3-none-any.whl", trusted or key)
    files = {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }
    manifest = {"format": 1, "name": "citynerve", "version": version, "arch": "x86_64",
                "python": ["3.11"], "extras": [], "files": files}  # fmt: skip
    private = load_pem_private_key(key.private.read_bytes(), None)
    assert isinstance(private, Ed25519PrivateKey)
    sign_manifest(folder, manifest, private)
    return folder


def test_a_signed_bundle_verifies(tmp_path: Path, release_key: ReleaseKey) -> None:
    folder = make_bundle(tmp_path, release_key)
    manifest = fmt.verify(folder, release_key.public.read_bytes())
    assert manifest.version == "9.9.9" and "install.py" in manifest.files


def test_another_key_is_refused(tmp_path: Path, release_key: ReleaseKey) -> None:
    folder = make_bundle(tmp_path, release_key)
    other = ReleaseKey(tmp_path)  # overwrites nothing of the session key: another folder
    with pytest.raises(fmt.BundleError, match="signature does not verify"):
        fmt.verify(folder, other.public.read_bytes())


def test_the_bundle_tool_refuses_a_key_the_gateway_does_not_trust(
    tmp_path: Path, release_key: ReleaseKey
) -> None:
    # The gateway checks updates against its packaged config/release-key.pem: a bundle signed with
    # another key would install and then refuse its own updates.
    wheel = fake_wheel(tmp_path / "build" / "citynerve-9.9.9-py3-none-any.whl", ReleaseKey(tmp_path))
    with pytest.raises(BuildError, match="is not the release key the gateway trusts"):
        build_bundle(arch="x86_64", key_path=release_key.private, out=tmp_path / "dist", wheel=wheel)
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


@pytest.mark.parametrize("tamper", ["change", "add", "remove", "manifest"])
def test_tampered_bundles_are_refused(tmp_path: Path, release_key: ReleaseKey, tamper: str) -> None:
    folder = make_bundle(tmp_path, release_key)
    wheel = next((folder / "wheels").iterdir())
    if tamper == "change":
        wheel.write_bytes(b"something else")
        match = "SHA-256 does not match"
    elif tamper == "add":
        (folder / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"x")
        match = "files not in the manifest"
    elif tamper == "remove":
        wheel.unlink()
        match = "files missing"
    else:
        data = json.loads((folder / fmt.MANIFEST).read_text())
        data["files"][wheel.relative_to(folder).as_posix()] = "0" * 64
        (folder / fmt.MANIFEST).write_text(json.dumps(data))
        match = "signature does not verify"
    with pytest.raises(fmt.BundleError, match=match):
        fmt.verify(folder, release_key.public.read_bytes())


def test_openssl_verifies_the_same_signatures(tmp_path: Path, release_key: ReleaseKey) -> None:
    """A fresh box without the cryptography package verifies with the openssl command."""
    folder = make_bundle(tmp_path, release_key)
    raw, sig = (folder / fmt.MANIFEST).read_bytes(), (folder / fmt.SIGNATURE).read_bytes()
    assert fmt.verify_signature_openssl(release_key.public.read_bytes(), sig, raw)
    assert not fmt.verify_signature_openssl(release_key.public.read_bytes(), sig, raw + b" ")
    assert not fmt.verify_signature_openssl(release_key.public.read_bytes(), bytes(64), raw)


def _tarball(tmp: Path, folder: Path) -> Path:
    path = tmp / f"{folder.name}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return path


def test_unpack_refuses_links_and_paths_outside(tmp_path: Path) -> None:
    for name, kind in (
        ("b/../../evil", tarfile.REGTYPE),
        ("b/link", tarfile.SYMTYPE),
        ("/abs", tarfile.REGTYPE),
    ):
        path = tmp_path / "bad.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            tar.addfile(info, io.BytesIO(b""))
        dest = tmp_path / f"out-{name.replace('/', '_')}"
        dest.mkdir()
        with pytest.raises(fmt.BundleError, match="not a plain file or folder inside"):
            fmt.unpack(path, dest)
        assert not any(dest.iterdir())


def test_unpack_then_verify_round_trip(tmp_path: Path, release_key: ReleaseKey) -> None:
    folder = make_bundle(tmp_path / "build", release_key)
    tarball = _tarball(tmp_path, folder)
    (tmp_path / "site").mkdir()
    unpacked = fmt.unpack(tarball, tmp_path / "site")
    assert fmt.verify(unpacked, release_key.public.read_bytes()).version == "9.9.9"


@pytest.mark.parametrize("tamper", ["signature", "hash"])
def test_the_bundles_installer_refuses_and_installs_nothing(
    tmp_path: Path, release_key: ReleaseKey, tamper: str
) -> None:
    """install.py, run the way an installer on site runs it, refuses a bundle that does not verify."""
    folder = make_bundle(tmp_path, release_key)
    if tamper == "signature":
        sig = bytearray((folder / fmt.SIGNATURE).read_bytes())
        sig[0] ^= 1
        (folder / fmt.SIGNATURE).write_bytes(bytes(sig))
    else:
        (folder / "wheels" / "citynerve-9.9.9-py3-none-any.whl").write_bytes(b"changed")
    root = tmp_path / "opt"
    proc = subprocess.run(
        [sys.executable, str(folder / "install.py"), "--root", str(root), "--key", str(release_key.public)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "refused" in proc.stderr
    assert not (root / "releases").exists() and not (root / "current").exists()


def test_a_first_install_needs_the_key_from_outside_the_bundle(
    tmp_path: Path, release_key: ReleaseKey
) -> None:
    folder = make_bundle(tmp_path, release_key)
    proc = subprocess.run(
        [sys.executable, str(folder / "install.py"), "--root", str(tmp_path / "opt")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "--key" in proc.stdout


def test_the_release_public_key_is_package_data() -> None:
    key = shipped.release_public_key()
    assert key.startswith(b"-----BEGIN PUBLIC KEY-----")


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """The wheel holds only the listed packages: a new package folder must be added to the list."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top in ("gateway", "drivers", "hil"):
        for init in (REPO / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(REPO).parts))
    prefix = next((p.split(".")[0] + "." for p in listed if p.endswith(".gateway")), "")
    assert {prefix + f for f in found} <= listed, sorted({prefix + f for f in found} - listed)


def test_a_unit_for_a_bundle_install_rolls_back_interrupted_updates_before_starting() -> None:
    unit = render_unit("/opt/citynerve/current/bin/citynerve")
    assert (
        "ExecStartPre=+-/opt/citynerve/known-good/bin/citynerve update resume --root /opt/citynerve" in unit
    )
    assert "ExecStartPre" not in render_unit("/usr/local/bin/citynerve")


def test_a_failed_install_leaves_no_half_built_release(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = fmt.Manifest(name="citynerve", version="9.9.9", arch="x86_64", python=("3.11",), extras=(),
                            files={})  # fmt: skip
    root = tmp_path / "opt"
    final = root / "releases" / "9.9.9"

    def run(cmd: list[str], step: str) -> None:  # the venv is made, pip fills the disk midway
        if "venv" in cmd:
            (final / "bin").mkdir(parents=True)
            (final / "bin" / "python").write_text("")
            return
        (final / "lib" / "site-packages").mkdir(parents=True)
        (final / "lib" / "site-packages" / "pydantic_core.so").write_bytes(b"\0" * 4096)
        raise fmt.BundleError(step, "OSError: [Errno 28] No space left on device")

    monkeypatch.setattr(fmt, "_run", run)
    with pytest.raises(fmt.BundleError, match="No space left"):
        fmt.install_release(tmp_path, manifest, root)
    assert not final.exists() and (root / "releases").is_dir()
