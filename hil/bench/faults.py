"""Fault runner: runs the fault scenarios of `hil/faults/` against real processes and prints each
with held / broken / error and a total. Exits 1 when any scenario is broken or errs.

    python -m citynerve.hil.bench.faults [--slow] [-k SUBSTRING] [--list] [--json]

The fast scenarios run in CI (tests/test_faults_runner.py); `--slow` adds the long ones.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from citynerve.hil.faults import Broken, Scenario, load_all


def run_one(sc: Scenario) -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"fault-{sc.name}-") as tmp:
        try:
            result = sc.fn(Path(tmp))
            if inspect.isawaitable(result):
                awaitable = result

                async def bounded() -> str:
                    return await asyncio.wait_for(awaitable, sc.timeout_s)  # type: ignore[arg-type]

                result = asyncio.run(bounded())
            verdict, detail = "held", str(result)
        except Broken as exc:
            verdict, detail = "broken", str(exc)
        except Exception as exc:  # the scenario itself failed: reported, never hidden
            verdict = "error"
            detail = f"{type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=6)
    return {
        "name": sc.name,
        "area": sc.area,
        "promise": sc.promise,
        "slow": sc.slow,
        "verdict": verdict,
        "detail": detail,
        "seconds": round(time.monotonic() - started, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slow", action="store_true", help="also run the long scenarios")
    ap.add_argument("-k", dest="pattern", default="", help="only scenarios whose name contains this")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)

    chosen = [sc for sc in load_all().values() if (args.slow or not sc.slow) and args.pattern in sc.name]
    if args.list:
        for sc in chosen:
            print(f"{sc.name:45s} {'slow ' if sc.slow else ''}{sc.promise}")
        return 0
    results = []
    for sc in chosen:
        res = run_one(sc)
        results.append(res)
        if not args.json:
            first = res["detail"].splitlines()[0] if res["detail"] else ""
            print(f"{res['verdict']:7s} {sc.name:45s} {res['seconds']:6.1f}s  {first}", flush=True)
    totals = {v: sum(r["verdict"] == v for r in results) for v in ("held", "broken", "error")}
    if args.json:
        print(json.dumps({"scenarios": results, "total": len(results), **totals}, indent=2))
    else:
        print(
            f"{len(results)} scenarios: {totals['held']} held, {totals['broken']} broken, "
            f"{totals['error']} errors"
        )
    return 0 if results and totals["held"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
