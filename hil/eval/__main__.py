"""`python -m citynerve.hil.eval`: score every shipped pack on its labelled scenario and list misses."""

from __future__ import annotations

import sys

from citynerve.hil.eval.harness import evaluate
from citynerve.hil.eval.scenarios import build_all


def main() -> int:
    small = "--small" in sys.argv
    ok = True
    for s in evaluate(build_all(small=small)):
        print(f"{s.pack:14s} {s.figures()}  replay {s.replay_s:.1f} s")
        for ep in s.missed:
            print(f"   missed {ep.device_id} {ep.kinds} {ep.what} start {ep.start:.0f} end {ep.end:.0f}")
        for e in s.false[:20]:
            print(f"   false  {e.device_id} {e.kind} {e.ts:.0f} value {e.value!r}")
        ok = ok and s.f1 >= 0.95 and s.false_alarms_vibration == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
