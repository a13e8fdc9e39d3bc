"""Settings for the whole suite.

Hypothesis runs derandomized and without an example database: every clean clone (and CI) gets the
same examples and the same verdict; a failure found once is replayed from the printed example, not
from a local `.hypothesis/` folder.
"""

from __future__ import annotations

import pytest
from hypothesis import settings

settings.register_profile("citynerve", derandomize=True, database=None, print_blob=True)
settings.load_profile("citynerve")


def pytest_collection_finish(session: pytest.Session) -> None:
    from tests import background

    background.start_selected(session)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests import background

    background.stop_all()
