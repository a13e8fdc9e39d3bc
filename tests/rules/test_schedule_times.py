"""A schedule's `end` is a time of day, or 24:00 (to midnight): `citynerve config check` (a real
process) refused 25:00 but took 24:59, a time no clock reads (the window then never closed the day)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rules.test_config_numbers import check

SCHEDULE = """
[[rules.schedules]]
id = "night"
start = "23:00"
end = "{end}"
"""


@pytest.mark.parametrize("end", ["24:59", "24:01", "25:00", "23:60"])
def test_a_schedule_end_past_midnight_is_refused(tmp_path: Path, end: str) -> None:
    code, issues = check(tmp_path, SCHEDULE.format(end=end))
    assert code == 2
    assert len(issues) == 1 and issues[0].startswith("rules.schedules[0] (id 'night').end: "), issues


@pytest.mark.parametrize("end", ["24:00", "06:00", "23:59", "00:00"])
def test_a_schedule_end_of_a_day_or_midnight_is_taken(tmp_path: Path, end: str) -> None:
    assert check(tmp_path, SCHEDULE.format(end=end)) == (0, [])
