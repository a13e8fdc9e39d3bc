"""The benchmark script runs and prints the keys the issue names (tiny sizes: not a timing test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "hil" / "bench" / "ble.py"


def test_bench_json_keys() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--runs", "1", "--adverts", "200", "--latency-adverts", "5", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    result = json.loads(out)
    for key in ("adv_per_s_plain", "adv_per_s_encrypted", "latency_p99_ms", "latency_p50_ms"):
        assert result[key] > 0
