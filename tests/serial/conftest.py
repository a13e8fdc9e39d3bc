"""Fixtures for tests/serial: they live in serial_support.py, which the tests import by that unique name
(several test folders have a conftest.py; `from conftest import` would depend on run order)."""

from serial_support import *  # noqa: F403
