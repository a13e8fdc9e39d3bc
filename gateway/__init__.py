"""CityNerve: edge gateway for city operations."""

from __future__ import annotations

import functools


@functools.cache
def _version() -> str:
    # importlib.metadata (and the email package it reads metadata with) is imported when the version
    # is asked for: every CLI command imports this package, and most never show the version.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("citynerve")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__"]
