"""Settings for the whole suite.

Hypothesis runs derandomized and without an example database: every clean clone (and CI) gets the
same examples and the same verdict; a failure found once is replayed from the printed example, not
from a local `.hypothesis/` folder.

The README's command runs the suite on two pytest-xdist workers (`-n 2`). What a worker runs whole
is a *unit* (`unit`): every file alone (its module fixtures are set up once), but tests/release as
one (each release bundle is built once, by the worker that runs them) and the evaluation tests as
one (each scenario replayed once, `eval_replays`). The two long units go first. Work done in the
background (release builds, `rules_eval.py`: tests/background.py) starts, in a worker, at the first
test of its unit, so it runs once, in the worker that needs it; without workers (`-n 0`, one file,
one test) it starts when collection ends, as before.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("citynerve", derandomize=True, database=None, print_blob=True)
settings.load_profile("citynerve")

RELEASE_UNIT = "tests/release"
EVAL_UNIT = "tests/rules/test_eval*"
FIRST_UNITS = (RELEASE_UNIT, EVAL_UNIT)  # the longest: started first, so neither ends the run alone


def unit(nodeid: str) -> str:
    """The tests one worker runs together (`nodeid` as pytest gives it, relative to the repo)."""
    path = nodeid.split("::", 1)[0]
    if path.startswith(RELEASE_UNIT + "/"):
        return RELEASE_UNIT
    if path.startswith("tests/rules/test_eval"):
        return EVAL_UNIT
    return path


def in_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent from a venv without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        """xdist's loadscope with `unit` as the scope, in the collection's order (long units first)."""

        def _split_scope(self, nodeid: str) -> str:
            return unit(nodeid)

        def schedule(self) -> None:
            self.config.option.loadscopereorder = False  # keep FIRST_UNITS first (not by test count)
            super().schedule()

    return UnitScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_worker(config):  # every worker sorts alike: xdist checks the collections are equal
        rank = {name: i for i, name in enumerate(FIRST_UNITS)}
        items.sort(key=lambda item: rank.get(unit(item.nodeid), len(FIRST_UNITS)))


def pytest_collection_finish(session: pytest.Session) -> None:
    from tests import background

    if not in_worker(session.config):
        background.start_selected(session)


def pytest_runtest_setup(item: pytest.Item) -> None:
    from tests import background

    if in_worker(item.config) and unit(item.nodeid) == EVAL_UNIT:
        background.start_selected(item.session)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests import background

    background.stop_all()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder under /tmp, removed afterwards: Unix socket paths (the gateway's control
    socket, Mosquitto's) must stay under ~100 characters, and pytest's tmp_path may be longer."""
    d = Path(tempfile.mkdtemp(prefix="cn-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
