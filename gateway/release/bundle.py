"""Offline release bundles: open, verify, install side by side. Standard library only.

This file is copied into every bundle as `install.py` and run there with the system's python3 on a
box that has no gateway yet (and no network), so it must not import anything but the standard
library. `citynerve update apply` imports the same code.

A bundle is `citynerve-<version>-<arch>.tar.gz` holding one folder `citynerve-<version>-<arch>/`:

    install.py          this file
    release-key.pem     the public half of the key the bundle was signed with (for reference only)
    wheels/*.whl        the gateway and every dependency, for the arch and each Python version
    MANIFEST.json       {"format": 1, "name", "version", "arch", "python", "extras", "files": {path: sha256}}
    MANIFEST.json.sig   Ed25519 signature (64 raw bytes) of MANIFEST.json's exact bytes

Verification: the signature against a trusted public key (never the one inside the bundle), then
every file's SHA-256 against the manifest; a file that is missing, extra or changed refuses the bundle.
install.py also refuses a bundle whose gateway wheel trusts another release key than the one it was
verified with (the installed gateway checks its updates against that packaged key).

Install: a venv `releases/<version>` gets the wheels with `pip install --no-index`; it is a release
only once its info file (written last, fsynced) is there. An install that fails removes its folder;
a power cut leaves either an incomplete folder that nothing points at (removed by the next install)
or a complete release.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "MANIFEST.json"
SIGNATURE = "MANIFEST.json.sig"
FORMAT = 1
MAX_MANIFEST_BYTES = 1 << 20
MAX_MEMBERS = 2000
MAX_BUNDLE_BYTES = 1 << 31  # unpacked
RELEASE_INFO = "citynerve-release.json"  # written into each installed release's folder
# Where the gateway's wheel carries the release key it trusts (`citynerve update key` prints it).
WHEEL_RELEASE_KEY = "citynerve/config/release-key.pem"
VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+-]{0,63}$")
ARCHES = ("x86_64", "aarch64", "armv7l")
# Extras installed into every release when the bundle ships their wheels (small, needed on site:
# `citynerve devices import register.xlsx`); `sim` only with `install.py --sim`.
ALWAYS_EXTRAS = ("register",)


class BundleError(Exception):
    """A bundle that cannot be used; `where` names the bundle (or file in it), `reason` says why."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class Manifest:
    """The verified manifest of a bundle."""

    name: str
    version: str
    arch: str
    python: tuple[str, ...]
    extras: tuple[str, ...]
    files: dict[str, str]  # relative path -> sha256 hex

    @classmethod
    def parse(cls, raw: bytes, where: str) -> Manifest:
        if len(raw) > MAX_MANIFEST_BYTES:
            raise BundleError(where, f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise BundleError(where, f"manifest is not JSON: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BundleError(where, f"manifest format is not {FORMAT}")
        files = data.get("files")
        version = data.get("version")
        if not isinstance(version, str) or not VERSION_RE.match(version):
            raise BundleError(where, f"manifest version {version!r} is not a version")
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
            for k, v in files.items()
        ):
            raise BundleError(where, "manifest files must map paths to SHA-256 hex digests")
        for name in files:
            if not _safe_relative(name):
                raise BundleError(where, f"manifest names an unsafe path {name!r}")
        return cls(
            name=str(data.get("name", "")),
            version=version,
            arch=str(data.get("arch", "")),
            python=tuple(str(v) for v in data.get("python", ())),
            extras=tuple(str(v) for v in data.get("extras", ())),
            files=dict(files),
        )


def _safe_relative(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_signature(public_key_pem: bytes, signature: bytes, data: bytes) -> bool:
    """True if `signature` is a valid Ed25519 signature of `data` by the key.

    With the `cryptography` package when it is importable (a running gateway has it), else with the
    `openssl` command (a fresh box: OpenSSL >= 1.1.1 verifies Ed25519 with `pkeyutl -rawin`).
    """
    if len(signature) != 64:
        return False
    if b"-----BEGIN PUBLIC KEY-----" not in public_key_pem:
        raise BundleError("public key", "not a PEM public key")
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError:
        return verify_signature_openssl(public_key_pem, signature, data)
    try:
        key = load_pem_public_key(public_key_pem)
    except (ValueError, TypeError) as err:  # damaged armour, an unsupported algorithm
        raise BundleError("public key", "not a PEM public key") from err
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError("public key", "not an Ed25519 key")
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def verify_signature_openssl(public_key_pem: bytes, signature: bytes, data: bytes) -> bool:
    """`verify_signature` with the openssl command line, for boxes without `cryptography`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BundleError("openssl", "neither the cryptography package nor the openssl command is installed")
    with tempfile.TemporaryDirectory(prefix="citynerve-verify-") as tmp:
        key, sig, msg = Path(tmp, "key.pem"), Path(tmp, "sig"), Path(tmp, "msg")
        key.write_bytes(public_key_pem)
        sig.write_bytes(signature)
        msg.write_bytes(data)
        cmd = [openssl, "pkeyutl", "-verify", "-pubin", "-inkey", str(key), "-rawin"]
        proc = subprocess.run([*cmd, "-in", str(msg), "-sigfile", str(sig)], capture_output=True, text=True)
    return proc.returncode == 0


def unpack(bundle: Path, dest: Path) -> Path:
    """Extract a bundle tarball into `dest` (bounded: regular files and folders only, each name
    once, no links, no paths outside, nothing beneath a file); returns the bundle's folder.
    Every failure, a damaged or truncated file included, is a BundleError. Verification is
    separate (`verify`)."""
    where = str(bundle)
    damaged = (OSError, tarfile.TarError, EOFError, zlib.error)  # zlib: a flipped bit in the stream
    try:
        tar = tarfile.open(bundle, "r:gz")  # noqa: SIM115 (closed by the `with` below)
    except damaged as err:
        raise BundleError(where, f"not a readable .tar.gz: {err}") from None
    with tar:
        try:
            members = _members(tar, where)
        except damaged as err:
            raise BundleError(where, f"damaged tarball: {err}") from None
        tops = {m.name.split("/", 1)[0] for m in members}
        if len(tops) != 1:
            raise BundleError(where, f"expected one top folder, found {sorted(tops)}")
        try:
            for member in members:
                target = dest / member.name
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:
                    raise BundleError(where, f"member {member.name!r} has no data")
                with src, target.open("wb") as out:
                    shutil.copyfileobj(src, out)
        except damaged as err:
            raise BundleError(where, f"cannot unpack (damaged, or no room): {err}") from None
    return dest / tops.pop()


def _members(tar: tarfile.TarFile, where: str) -> list[tarfile.TarInfo]:
    """The members, checked before anything is written: bounded, plain, inside, each name once and
    none beneath a file (a file and a folder of one name cannot both be unpacked)."""
    members: list[tarfile.TarInfo] = []
    total = 0
    names: set[str] = set()
    files: set[str] = set()
    folders: set[str] = set()  # every folder above a name, listed or not
    for member in tar:
        members.append(member)
        total += member.size
        if len(members) > MAX_MEMBERS or total > MAX_BUNDLE_BYTES:
            raise BundleError(where, f"more than {MAX_MEMBERS} files or {MAX_BUNDLE_BYTES} bytes")
        name = member.name.rstrip("/")
        if not (member.isfile() or member.isdir()) or not _safe_relative(name):
            raise BundleError(where, f"member {member.name!r} is not a plain file or folder inside")
        if name in names:
            raise BundleError(where, f"member {name!r} is in the bundle twice")
        if member.isfile() and name in folders:
            raise BundleError(where, f"member {name!r} is a file and a folder")
        parts = name.split("/")
        above = ["/".join(parts[:i]) for i in range(1, len(parts))]
        under = next((p for p in above if p in files), None)
        if under is not None:
            raise BundleError(where, f"member {name!r} is beneath the file {under!r}")
        names.add(name)
        folders.update(above)
        if member.isfile():
            files.add(name)
    return members


def verify(folder: Path, public_key_pem: bytes) -> Manifest:
    """Check an unpacked bundle: signature of the manifest, then every file against it."""
    where = str(folder)
    try:
        raw = (folder / MANIFEST).read_bytes()
        signature = (folder / SIGNATURE).read_bytes()
    except OSError as err:
        raise BundleError(where, f"no manifest or signature: {err}") from None
    if not verify_signature(public_key_pem, signature, raw):
        raise BundleError(where, "the manifest's signature does not verify against the release key")
    manifest = Manifest.parse(raw, where)
    present = {
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()
    } - {MANIFEST, SIGNATURE}
    listed = set(manifest.files)
    if present - listed:
        raise BundleError(where, f"files not in the manifest: {sorted(present - listed)[:5]}")
    if listed - present:
        raise BundleError(where, f"files missing: {sorted(listed - present)[:5]}")
    for name, digest in sorted(manifest.files.items()):
        path = folder / name
        if path.is_symlink() or sha256_file(path) != digest:
            raise BundleError(f"{where}/{name}", "SHA-256 does not match the manifest")
    return manifest


def packaged_release_key(folder: Path, manifest: Manifest) -> bytes:
    """The release key the gateway in a verified bundle trusts: the one later updates of the
    installed gateway are checked against (package data in its wheel)."""
    wheels = sorted((folder / "wheels").glob(f"citynerve-{manifest.version}-*.whl"))
    if not wheels:
        raise BundleError(str(folder), f"no citynerve {manifest.version} wheel in wheels/")
    try:
        with zipfile.ZipFile(wheels[0]) as wheel:
            return wheel.read(WHEEL_RELEASE_KEY)
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise BundleError(f"{folder}/wheels/{wheels[0].name}", f"no {WHEEL_RELEASE_KEY}: {err}") from None


def same_key(a: bytes, b: bytes) -> bool:
    """Two PEM public keys are the same key (line endings and blank lines aside)."""
    return a.split() == b.split()


def check_trusted_key(folder: Path, manifest: Manifest, key: bytes) -> None:
    """Refuse a bundle whose gateway trusts another release key than `key`, the key the installer
    verified it with: the installed gateway would refuse every update signed like this bundle."""
    if not same_key(packaged_release_key(folder, manifest), key):
        raise BundleError(
            "release key",
            "the gateway in this bundle trusts another release key than the one it was verified with, so "
            "it would refuse every later update signed with that key (`citynerve update key` prints "
            "the one it trusts); the bundle was built with a key whose public half is not the source's "
            "config/release-key.pem: rebuild it (hil/tools/bundle.py refuses that now)",
        )


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def switch_link(link: Path, target: str) -> None:
    """Point the symlink `link` at `target` atomically: a new link renamed over the old one."""
    tmp = link.with_name(f".{link.name}.new")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def install_release(
    folder: Path, manifest: Manifest, root: Path, *, extras: tuple[str, ...] = (), python: str | None = None
) -> Path:
    """Install a verified bundle as `root/releases/<version>` (a venv); returns its folder.

    Every release gets the extras the bundle ships for every install (`ALWAYS_EXTRAS`: openpyxl for
    .xlsx registers) besides `extras`. Idempotent: a complete release of that version is kept as it
    is, except that extras it lacks (`install.py --sim` run again) are added to it. Needs no network.
    """
    extras = tuple(dict.fromkeys([*extras, *(e for e in ALWAYS_EXTRAS if e in manifest.extras)]))
    releases = root / "releases"
    releases.mkdir(parents=True, exist_ok=True)
    final = releases / manifest.version
    if (final / RELEASE_INFO).is_file():
        info = release_info(final) or {}
        have = tuple(str(e) for e in info.get("extras") or ())
        if set(extras) <= set(have):
            return final
        wanted = tuple(dict.fromkeys([*have, *extras]))
        _pip_install(final, folder, manifest.version, wanted)  # adds packages; the release stays whole
        _write_info(final, {**info, "extras": list(wanted)})
        return final
    # A venv cannot be moved (its scripts name their interpreter's path), so it is built in place and
    # counts as a release only once its info file is written, last. A folder without one was left by
    # a power cut during an earlier install: it is never current, and is removed here.
    for link in ("current", "known-good"):
        if (root / link).resolve() == final.resolve():
            raise BundleError(str(final), f"is {link} but not a complete release; reinstall it by hand")
    shutil.rmtree(final, ignore_errors=True)
    py = python or sys.executable
    try:
        _run([py, "-m", "venv", str(final)], "create the release's venv")
        _pip_install(final, folder, manifest.version, extras)
        os.sync()  # the release's files are on disk before the info file says it is complete
        _write_info(final, {"version": manifest.version, "arch": manifest.arch, "extras": list(extras)})
    except BaseException:
        # A failed install (pip's error, a full disk, Ctrl-C) leaves no half-built release taking
        # the room the next try needs.
        shutil.rmtree(final, ignore_errors=True)
        raise
    return final


def _pip_install(release: Path, folder: Path, version: str, extras: tuple[str, ...]) -> None:
    requirement = f"citynerve[{','.join(extras)}]" if extras else "citynerve"
    _run(
        [
            str(release / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--no-cache-dir",
            "--disable-pip-version-check", "--find-links", str(folder / "wheels"),
            f"{requirement}=={version}",
        ],
        "install the wheels",
    )  # fmt: skip


def _write_info(release: Path, info: dict[str, Any]) -> None:
    tmp = release / f".{RELEASE_INFO}.tmp"
    with tmp.open("w") as f:
        json.dump(info, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, release / RELEASE_INFO)
    fsync_dir(release)


def _run(cmd: list[str], step: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise BundleError(step, " / ".join(tail) or f"exit {proc.returncode}")


def release_info(release: Path) -> dict[str, Any] | None:
    """The info file of an installed release, or None when the folder is not a complete release."""
    try:
        data = json.loads((release / RELEASE_INFO).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def main(argv: list[str] | None = None) -> int:
    """`python3 install.py` inside an unpacked bundle: verify it and install it (first install)."""
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description="Install CityNerve from this offline bundle (no network).")
    parser.add_argument("--root", type=Path, default=Path("/opt/citynerve"), help="install root")
    parser.add_argument(
        "--key", type=Path, help="the release public key (PEM) to trust; default: the installed release's"
    )
    parser.add_argument(
        "--sim", action="store_true",
        help="also install the simulators, the demo and bumble (BLE HCI dongles); run again to add them",
    )  # fmt: skip
    parser.add_argument("--python", default=sys.executable, help="Python for the release's venv")
    args = parser.parse_args(argv)
    root: Path = args.root
    if args.key is not None:
        try:
            key = args.key.read_bytes()
        except OSError as err:  # missing, a folder, not readable
            print(f"refused: --key {args.key}: cannot read: {err.strerror or err}", file=sys.stderr)
            return 2
    elif (root / "current" / "bin" / "citynerve").exists():
        key = subprocess.run(
            [str(root / "current" / "bin" / "citynerve"), "update", "key"], capture_output=True, check=True
        ).stdout
    else:
        print("first install: give the release public key with --key FILE (published with the releases)")
        return 2
    try:
        manifest = verify(here, key)
        check_trusted_key(here, manifest, key)
        release = install_release(
            here, manifest, root, extras=("sim",) if args.sim else (), python=args.python
        )
    except BundleError as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2 if err.where in ("public key", "release key") else 1
    # Each link is made when it is missing, on its own: running the installer again mends a first
    # install that was interrupted after `current` (no known-good, no bin/citynerve).
    first = not (root / "current").exists()
    if first:
        switch_link(root / "current", f"releases/{manifest.version}")
    if not (root / "known-good").is_symlink():
        switch_link(root / "known-good", os.readlink(root / "current"))
    (root / "bin").mkdir(exist_ok=True)
    if not (root / "bin" / "citynerve").is_symlink():
        switch_link(root / "bin" / "citynerve", "../current/bin/citynerve")
    extras = ", ".join((release_info(release) or {}).get("extras") or ()) or "none"
    if first:
        print(f"installed {manifest.version} as the current release: {root / 'bin' / 'citynerve'}")
    elif (root / "current").resolve() == release.resolve():
        print(f"{manifest.version} is the current release (extras: {extras}): {root / 'bin' / 'citynerve'}")
    else:
        print(f"installed {manifest.version} beside the current release: {release}")
        print(f"switch to it with: {root / 'bin' / 'citynerve'} update apply <this bundle>")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
