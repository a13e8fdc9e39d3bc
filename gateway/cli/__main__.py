"""`python -m citynerve.gateway.cli` is `citynerve`."""

from citynerve.gateway.cli import entry

entry()
