"""The `citynerve` command line."""

from __future__ import annotations

from gateway.cli._groups import main

__all__ = ["main"]
