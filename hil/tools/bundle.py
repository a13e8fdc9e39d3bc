"""Build a signed offline release bundle for one architecture (needs PyPI and the release key).

    .venv/bin/python -m citynerve.hil.tools.bundle --arch aarch64 --key release-key.pem -o dist/

Writes `dist/citynerve-<version>-<arch>.tar.gz`: the gateway's wheel and the wheels of every
dependency (with the `register` extra, openpyxl for .xlsx registers, which install.py installs
every time, and the `sim` extra, installed with `install.py --sim`, so the demo runs offline too)
for that architecture and each Python version (3.11: Debian 12 / Raspberry Pi OS bookworm; 3.13:
Debian 13 / trixie), the stdlib installer `install.py` (gateway/release/bundle.py), `MANIFEST.json`
with the SHA-256 of every file and its Ed25519 signature. Wheels only (`--only-binary=:all:`):
nothing is compiled on site. A dependency without a wheel for the arch fails the build and is named;
`--find-links DIR` adds wheels built elsewhere (see docs/installer-guide.md, "Architectures").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from citynerve.gateway.release import bundle as bundle_format
from citynerve.hil.tools.check_wheels import PLATFORMS

REPO = Path(__file__).resolve().parents[2]
PYTHONS = ("3.11", "3.13")


class BuildError(Exception):
    """The bundle cannot be built; the message says which step and why."""


def build_wheel(source: Path, dest: Path) -> Path:
    """The gateway's wheel from a source tree (`pip wheel --no-deps`)."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("citynerve-*.whl"))
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check"]
    proc = subprocess.run([*cmd, "-w", str(dest), str(source)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"pip wheel {source}: {proc.stderr.strip()[-2000:]}")
    new = sorted(set(dest.glob("citynerve-*.whl")) - before) or sorted(dest.glob("citynerve-*.whl"))
    return new[-1]


def download_deps(
    wheel: Path, dest: Path, *, arch: str, python: str, extras: tuple[str, ...], find_links: list[Path]
) -> None:
    """Wheels of every dependency of `wheel[extras]` for `arch` and `python` into `dest`."""
    requirement = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--dest", str(dest)]
    cmd += ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for tag in PLATFORMS[arch]:
        cmd += ["--platform", tag]
    for folder in [wheel.parent, *find_links]:
        cmd += ["--find-links", str(folder)]
    proc = subprocess.run([*cmd, requirement], capture_output=True, text=True)
    if proc.returncode != 0:
        missing = without_wheels(
            requirement, arch=arch, python=python, find_links=[wheel.parent, *find_links]
        )
        why = f"no wheel for {', '.join(missing)}" if missing else proc.stderr.strip()[-1500:]
        raise BuildError(f"{arch} / Python {python}: {why} (add wheels built elsewhere with --find-links)")


def without_wheels(requirement: str, *, arch: str, python: str, find_links: list[Path]) -> list[str]:
    """The pinned dependencies (as this machine resolves them) that have no wheel for `arch`."""
    links = [arg for folder in find_links for arg in ("--find-links", str(folder))]
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--report", "-",
         "--disable-pip-version-check", *links, requirement],
        capture_output=True, text=True,
    )  # fmt: skip
    if report.returncode != 0:
        return []
    pins = [
        f"{i['metadata']['name']}=={i['metadata']['version']}" for i in json.loads(report.stdout)["install"]
    ]
    missing = []
    for pin in pins:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "--python-version", python, "--implementation", "cp", *links]
        for tag in PLATFORMS[arch]:
            cmd += ["--platform", tag]
        with tempfile.TemporaryDirectory() as tmp:
            if subprocess.run([*cmd, "--dest", tmp, pin], capture_output=True).returncode != 0:
                missing.append(pin)
    return missing


def check_wheel_key(wheel: Path, public: bytes, key_path: Path) -> None:
    """Refuse to sign with a key the gateway in the wheel does not trust: installed, it checks every
    update against its packaged key (config/release-key.pem), so such a bundle would install (the
    installer refuses it now) and then refuse its own updates."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            packaged = zf.read(bundle_format.WHEEL_RELEASE_KEY)
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise BuildError(f"{wheel.name}: no {bundle_format.WHEEL_RELEASE_KEY}: {err}") from None
    if not bundle_format.same_key(packaged, public):
        raise BuildError(
            f"{key_path} is not the release key the gateway trusts: put its public half in the "
            "source's config/release-key.pem (the installed gateway checks updates against that "
            "file) and build again"
        )


def sign_manifest(folder: Path, manifest: dict[str, object], key: Ed25519PrivateKey) -> None:
    raw = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
    (folder / bundle_format.MANIFEST).write_bytes(raw)
    (folder / bundle_format.SIGNATURE).write_bytes(key.sign(raw))


def build_bundle(
    *,
    arch: str,
    key_path: Path,
    out: Path,
    source: Path = REPO,
    wheel: Path | None = None,
    pythons: tuple[str, ...] = PYTHONS,
    extras: tuple[str, ...] = ("sim", "register"),
    find_links: list[Path] | None = None,
) -> Path:
    """Build, sign and write the bundle; returns the tarball's path."""
    key = load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BuildError(f"{key_path}: not an Ed25519 private key")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="citynerve-bundle-") as tmp:
        wheel = wheel or build_wheel(source, Path(tmp) / "build")
        version = wheel.name.split("-")[1]
        public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        check_wheel_key(wheel, public, key_path)
        name = f"citynerve-{version}-{arch}"
        folder = Path(tmp) / name
        wheels = folder / "wheels"
        wheels.mkdir(parents=True)
        shutil.copy2(wheel, wheels / wheel.name)
        for python in pythons:
            download_deps(wheels / wheel.name, wheels, arch=arch, python=python, extras=extras,
                          find_links=find_links or [])  # fmt: skip
        shutil.copy2(Path(bundle_format.__file__), folder / "install.py")
        (folder / "release-key.pem").write_bytes(public)
        files = {
            p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "format": bundle_format.FORMAT,
            "name": "citynerve",
            "version": version,
            "arch": arch,
            "python": list(pythons),
            "extras": list(extras),
            "files": files,
        }
        sign_manifest(folder, manifest, key)
        target = out / f"{name}.tar.gz"
        partial = out / f".{name}.tar.gz.partial"
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(folder, arcname=name)
        os.replace(partial, target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--arch", choices=sorted(PLATFORMS), required=True)
    parser.add_argument("--key", type=Path, required=True, help="the release private key (Ed25519 PEM)")
    parser.add_argument("-o", "--out", type=Path, default=Path("dist"))
    parser.add_argument("--wheel", type=Path, help="use this gateway wheel instead of building one")
    parser.add_argument("--python", action="append", help="Python versions (default: 3.11 and 3.13)")
    parser.add_argument("--find-links", type=Path, action="append", default=[], help="extra wheel folders")
    parser.add_argument("--no-sim", action="store_true", help="leave out the simulators' deps (no demo)")
    args = parser.parse_args()
    try:
        path = build_bundle(
            arch=args.arch, key_path=args.key, out=args.out, wheel=args.wheel,
            pythons=tuple(args.python or PYTHONS), find_links=args.find_links,
            extras=("register",) if args.no_sim else ("sim", "register"),
        )  # fmt: skip
    except BuildError as err:
        print(f"bundle: {err}", file=sys.stderr)
        return 1
    print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
