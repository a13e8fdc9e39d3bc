"""glibc heap settings of the running gateway (gateway/heap.py, issue 17: peak RSS).

A real interpreter frees a 4 MB block (glibc then raises its mmap and trim thresholds on its own),
then makes and frees 3 MB in 200 KiB blocks: without `heap.tune()` the 3 MB stay in the process,
with it they are given back. An operator's own MALLOC_* setting is left alone.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from citynerve.gateway import heap
applied = heap.tune() if sys.argv[1] == "tune" else {}
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
big = bytes(4 << 20)  # mapped and unmapped: glibc raises its thresholds to 4 / 8 MB
del big
before = rss_kb()
blocks = [bytes([i]) * (200 << 10) for i in range(15)]  # 3 MB in 200 KiB blocks
grew = rss_kb() - before
del blocks
print(json.dumps({"applied": applied, "grew_kb": grew, "kept_kb": rss_kb() - before}))
"""


def _run(mode: str, **env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
        check=True,
    )
    return json.loads(done.stdout)


def test_freed_large_blocks_are_given_back_after_tune() -> None:
    plain = _run("plain")
    tuned = _run("tune")
    assert tuned["applied"] == {
        "MALLOC_TRIM_THRESHOLD_": 131072,
        "MALLOC_MMAP_THRESHOLD_": 131072,
        "MALLOC_ARENA_MAX": 1,
    }
    assert plain["grew_kb"] >= 2500 and tuned["grew_kb"] >= 2500
    assert plain["kept_kb"] >= 2500, plain  # glibc's raised thresholds keep the freed 3 MB
    assert tuned["kept_kb"] < 500, tuned


def test_an_operators_setting_is_left_alone() -> None:
    tuned = _run("tune", MALLOC_ARENA_MAX="4")
    assert "MALLOC_ARENA_MAX" not in tuned["applied"]
    assert set(tuned["applied"]) == {"MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"}
