"""A profile's [identify] table is validated with the profile: `config check` names a mistake in it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from citynerve.gateway.config import Profile

BASE = {"id": "p", "family": "modbus", "points": {"v": {"table": "input", "address": 0}}}


def test_identify_mistakes_are_named() -> None:
    Profile.model_validate({**BASE, "identify": {"plausible": {"v": [1, 2]}}})
    with pytest.raises(ValidationError, match="does not have"):
        Profile.model_validate({**BASE, "identify": {"plausible": {"volts": [1, 2]}}})
    with pytest.raises(ValidationError, match="registers"):
        Profile.model_validate({**BASE, "identify": {"registers": [{"address": 70000}]}})
    with pytest.raises(ValidationError, match="extra"):
        Profile.model_validate({**BASE, "identify": {"regsiters": []}})
