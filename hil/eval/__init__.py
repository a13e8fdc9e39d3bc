"""Labelled synthetic data for the rule packs and the harness that scores them (issue 6).

`python -m citynerve.hil.eval` (or hil/bench/rules_eval.py) generates every scenario with a fixed seed,
replays it through the real pipeline and rule engine, and prints precision, recall, F1 and
detection delay per pack. The detectors never see the labels: the harness only compares.
"""

from citynerve.hil.eval.harness import PackScore, evaluate, replay
from citynerve.hil.eval.model import Episode, Scenario
from citynerve.hil.eval.scenarios import INDEPENDENT, SCENARIOS, build_all, build_independent

__all__ = [
    "INDEPENDENT",
    "SCENARIOS",
    "Episode",
    "PackScore",
    "Scenario",
    "build_all",
    "build_independent",
    "evaluate",
    "replay",
]
