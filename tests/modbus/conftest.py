"""Fixtures for tests/modbus: they live in modbus_support.py, which the tests import by that unique name
(several test folders have a conftest.py; `from conftest import` would depend on run order)."""

from modbus_support import *  # noqa: F403
