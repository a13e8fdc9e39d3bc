"""What ships inside the installed package, found through importlib.resources (never through the
source tree): device profiles, rule packs, example configs, the uplink's JSON Schemas, the status
page and the release public key.

The repo's `config/` folder is installed as the package `citynerve.config` (see pyproject.toml), so
a built wheel carries the same files as a checkout. One function per kind of resource.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

CONFIG_PACKAGE = "citynerve.config"
RELEASE_KEY_NAME = "release-key.pem"


def _folder(package: str, *parts: str) -> Path:
    """A folder of package data as a real path (the gateway is installed unpacked, never zipped)."""
    found: Traversable = resources.files(package).joinpath(*parts)
    path = Path(str(found))
    if not path.is_dir():
        raise FileNotFoundError(f"package data {package}/{'/'.join(parts)} is not installed")
    return path


def profiles() -> Path:
    """The folder of shipped device profiles (`<id>.toml`)."""
    return _folder(CONFIG_PACKAGE, "profiles")


def rule_packs() -> Path:
    """The folder of shipped rule packs (`<name>.toml`)."""
    return _folder(CONFIG_PACKAGE, "rules")


def examples() -> Path:
    """The folder of example gateway configs."""
    return _folder(CONFIG_PACKAGE, "examples")


def schemas(version: int = 1) -> Path:
    """The folder of the uplink's JSON Schemas of one contract version (`<message kind>.json`)."""
    return _folder("citynerve.gateway.uplink.schemas", f"v{version}")


def status_page(name: str) -> bytes:
    """One file of the local status page (`index.html`, `status.js`, `status.css`)."""
    return resources.files("citynerve.gateway.web").joinpath("static", name).read_bytes()


def release_public_key() -> bytes:
    """The release key's public half (Ed25519, PEM SubjectPublicKeyInfo) that offline bundles
    are verified against."""
    return resources.files(CONFIG_PACKAGE).joinpath(RELEASE_KEY_NAME).read_bytes()
