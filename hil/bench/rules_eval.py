"""Rule packs scored on labelled synthetic data (issue 6): precision, recall, F1, delay per pack.

    .venv/bin/python hil/bench/rules_eval.py          # table for people
    .venv/bin/python hil/bench/rules_eval.py --json   # {"<pack>": {"precision": ..., ...}, ...}
    .venv/bin/python hil/bench/rules_eval.py --small  # the reduced scenarios the tests use

Every scenario has a fixed seed; each is replayed through gateway.pipeline.Pipeline with the
RuleEngine on a simulated clock (hil/eval). Floors: F1 >= 0.95 per pack, no vibration alarms.
Exit status 1 if a floor is missed.
"""

from __future__ import annotations

import argparse
import json
import sys

from hil.eval import build_all, evaluate

F1_FLOOR = 0.95


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object keyed by pack")
    ap.add_argument("--small", action="store_true", help="reduced scenarios (as in the tests)")
    args = ap.parse_args(argv)
    scores = evaluate(build_all(small=args.small))
    ok = all(s.f1 >= F1_FLOOR and s.false_alarms_vibration == 0 for s in scores)
    if args.json:
        print(json.dumps({s.pack: s.figures() for s in scores}))
        return 0 if ok else 1
    print(f"{'pack':14s} {'episodes':>8s} {'alarms':>6s} {'false':>5s} {'prec':>6s} {'recall':>6s} "
          f"{'F1':>6s} {'delay s':>8s} {'vib':>4s} {'readings':>9s} {'replay s':>8s}")  # fmt: skip
    for s in scores:
        counts = f"{s.episodes:8d} {s.alarms:6d} {s.false_alarms:5d}"
        rates = f"{s.precision:6.3f} {s.recall:6.3f} {s.f1:6.3f} {s.median_delay_s:8.1f}"
        tail = f"{s.false_alarms_vibration:4d} {s.readings:9d} {s.replay_s:8.1f}"
        print(f"{s.pack:14s} {counts} {rates} {tail}")
    print(f"floors (F1 >= {F1_FLOOR}, no vibration alarms): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
