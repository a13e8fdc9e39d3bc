"""Releases built in the test: a copy of the source tree with a test release key (its public half
is the package data the installed gateway verifies bundles against), one version per copy, built
into a signed bundle by the same tool a release manager runs (hil/tools/bundle.py)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import platform
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

REPO = Path(__file__).resolve().parents[2]
ARCH = platform.machine()
HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
SOURCE_PARTS = ("pyproject.toml", "README.md", "gateway", "drivers", "hil", "config")


class ReleaseKey:
    def __init__(self, folder: Path) -> None:
        key = Ed25519PrivateKey.generate()
        self.private = folder / "release-key.private.pem"
        self.public = folder / "release-key.pem"
        self.private.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        self.public.write_bytes(
            key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )


@pytest.fixture(scope="session")
def release_key(tmp_path_factory: pytest.TempPathFactory) -> ReleaseKey:
    return ReleaseKey(tmp_path_factory.mktemp("key"))


def source_copy(
    dest: Path, version: str, key: ReleaseKey, patch: Callable[[Path], None] | None = None
) -> Path:
    """The gateway's source with `version` and the test release key."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    dest.mkdir(parents=True)
    for part in SOURCE_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=ignore)
        else:
            shutil.copy2(src, dest / part)
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text()
    current = text.split('version = "', 1)[1].split('"', 1)[0]
    pyproject.write_text(text.replace(f'version = "{current}"', f'version = "{version}"', 1))
    shutil.copy2(key.public, dest / "config" / "release-key.pem")
    if patch is not None:
        patch(dest)
    return dest


def build(
    tmp: Path, version: str, key: ReleaseKey, *, pythons: tuple[str, ...] = (HOST_PYTHON,),
    patch: Callable[[Path], None] | None = None,
) -> Path:  # fmt: skip
    """A signed bundle of `version` for this machine's arch."""
    from citynerve.hil.tools.bundle import build_bundle

    src = source_copy(tmp / f"src-{version}", version, key, patch)
    return build_bundle(arch=ARCH, key_path=key.private, out=tmp / "dist", source=src, pythons=pythons)


def install_from_bundle(
    bundle: Path, root: Path, key: Path, *, sim: bool = False
) -> subprocess.CompletedProcess[str]:
    """Unpack the tarball and run its own install.py, offline, as an installer on site would."""
    unpacked = root.parent / f"unpacked-{bundle.stem}"
    unpacked.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "xzf", str(bundle), "-C", str(unpacked)], check=True)
    (folder,) = list(unpacked.iterdir())
    cmd = [sys.executable, str(folder / "install.py"), "--root", str(root), "--key", str(key)]
    return subprocess.run([*cmd, *(["--sim"] if sim else [])], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def base_bundles(tmp_path_factory: pytest.TempPathFactory, release_key: ReleaseKey) -> dict[str, Path]:
    """1.0.0 and 1.0.1, plain releases, built once for every test that needs them."""
    tmp = tmp_path_factory.mktemp("base-releases")
    return {"1.0.0": build(tmp, "1.0.0", release_key), "1.0.1": build(tmp, "1.0.1", release_key)}


def resigned(bundle: Path, dest: Path) -> Path:
    """`bundle` with its manifest signed by a key the gateway does not trust (contents unchanged)."""
    import tarfile

    unpacked = dest / "resign"
    unpacked.mkdir(parents=True)
    subprocess.run(["tar", "xzf", str(bundle), "-C", str(unpacked)], check=True)
    (folder,) = list(unpacked.iterdir())
    raw = (folder / "MANIFEST.json").read_bytes()
    (folder / "MANIFEST.json.sig").write_bytes(Ed25519PrivateKey.generate().sign(raw))
    out = dest / bundle.name
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return out


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_folder(folder: Path) -> Iterator[str]:
    """`folder` served over HTTP on a free loopback port (the URL a platform would give)."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietFiles, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
