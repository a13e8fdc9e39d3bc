"""Releases built in the test: a copy of the source tree with a test release key (its public half
is the package data the installed gateway verifies bundles against), one version per copy, built
into a signed bundle by the same tool a release manager runs (hil/tools/bundle.py).

Every bundle the release tests use is built once per session by `RELEASES`, in one background thread
started when collection ends, which then makes each test's own offline install (pip subprocesses,
niced: they overlap the tests that run before tests/release instead of adding two minutes to the
run); a fixture or test waits for the bundle or install it needs."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
def release_key() -> ReleaseKey:
    return RELEASES.key


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


@dataclasses.dataclass(frozen=True)
class Installed:
    """One test's install: its root, install.py's result, and pip's for the extra requirements (if any)."""

    root: Path
    install: subprocess.CompletedProcess[str]
    pip: subprocess.CompletedProcess[str] | None


class Releases:
    """The session's signed bundles, each built once (`want` at import, `get` in a fixture), in order,
    by one background thread, into a folder of their own (removed at the session's end)."""

    def __init__(self) -> None:
        self._wanted: dict[str, tuple[str, tuple[str, ...], Callable[[Path], None] | None]] = {}
        self._futures: dict[str, Future[Path]] = {}
        self._installs: dict[str, tuple[str, bool, tuple[str, ...]]] = {}
        self._installed: dict[str, Future[Installed]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._folder: Path | None = None
        self._key: ReleaseKey | None = None

    def want(
        self, name: str, version: str, *, pythons: tuple[str, ...] = (HOST_PYTHON,),
        patch: Callable[[Path], None] | None = None,
    ) -> None:  # fmt: skip
        """A bundle of `version` named `name` (a test module calls this when it is imported)."""
        self._wanted[name] = (version, pythons, patch)

    def want_install(self, name: str, bundle: str, *, sim: bool = False, pip: tuple[str, ...] = ()) -> None:
        """An install of the bundle `bundle` (offline, by its own install.py) for one test alone; `pip`:
        requirements then installed into it with its own pip (when the install succeeded)."""
        self._installs[name] = (bundle, sim, pip)

    @property
    def folder(self) -> Path:
        with self._lock:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="citynerve-releases-"))
            return self._folder

    @property
    def key(self) -> ReleaseKey:
        folder = self.folder
        with self._lock:
            if self._key is None:
                (folder / "key").mkdir()
                self._key = ReleaseKey(folder / "key")
            return self._key

    def start(self) -> None:
        """Queue every wanted bundle not queued yet (the thread builds them one after the other)."""
        key = self.key
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, "release-builds", initializer=_nice)
            for name, (version, pythons, patch) in self._wanted.items():
                if name not in self._futures:
                    tmp = self._folder / name  # type: ignore[operator]
                    self._futures[name] = self._pool.submit(build, tmp, version, key, pythons=pythons,
                                                            patch=patch)  # fmt: skip
            # After the builds they need (one thread, in order: an install never waits for a later job).
            for name, (bundle, sim, pip) in self._installs.items():
                if name not in self._installed:
                    self._installed[name] = self._pool.submit(self._install, name, bundle, sim, pip)

    def _install(self, name: str, bundle: str, sim: bool, pip: tuple[str, ...]) -> Installed:
        root = self.folder / "installs" / name / "opt"
        done = install_from_bundle(self._futures[bundle].result(), root, self.key.public, sim=sim)
        if done.returncode != 0 or not pip:
            return Installed(root, done, None)
        cmd = [str(root / "current" / "bin" / "python"), "-m", "pip", "install", "-q"]
        more = subprocess.run([*cmd, "--disable-pip-version-check", *pip], capture_output=True, text=True,
                              timeout=600, cwd=root.parent)  # fmt: skip
        return Installed(root, done, more)

    def get(self, name: str) -> Path:
        """The bundle `name`, once built (a build error is raised here, in the test that needs it)."""
        self.start()
        return self._futures[name].result()

    def installed(self, name: str) -> Installed:
        """The install `name` (a test's own), once done."""
        self.start()
        return self._installed[name].result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def _nice() -> None:
    """The build thread (and the pip processes it starts, which inherit it) at a lower priority."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


RELEASES = Releases()
RELEASES.want("1.0.0", "1.0.0")
RELEASES.want("1.0.1", "1.0.1")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the builds as soon as release tests are selected, before the first test runs (in an
    xdist worker: at its first release test, `RELEASES.get`, so only the worker that runs them
    builds; tests/conftest.py)."""
    here = Path(__file__).parent
    if hasattr(session.config, "workerinput"):
        return
    if any(item.path.is_relative_to(here) for item in session.items):
        RELEASES.start()


def pytest_runtest_setup(item: pytest.Item) -> None:
    RELEASES.start()  # the worker that runs tests/release (a no-op once started)


def pytest_sessionfinish(session: pytest.Session) -> None:
    RELEASES.close()


@pytest.fixture(scope="session")
def base_bundles() -> dict[str, Path]:
    """1.0.0 and 1.0.1, plain releases, built once for every test that needs them."""
    return {"1.0.0": RELEASES.get("1.0.0"), "1.0.1": RELEASES.get("1.0.1")}


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
