"""Run simulated RS-485 meters and a fire panel as a process (demos, end-to-end tests):

    python -m citynerve.hil.sim.serial --link-dir /tmp/sim --dlt645 000000000161 --dlt645 000000000301 \
        --cjt188 00000000000301 --panel --alarm-after 5

It prints one JSON line once the ports exist, `{"dlt645": PATH, "cjt188": PATH, "firepanel": PATH}`
(symlinks in --link-dir), then serves until SIGTERM/SIGINT. With --alarm-after S the panel prints a
first fire alarm (smoke detector, loop 4 device 4, 一层大厅东侧) after S seconds; --reset-after S
prints a reset S seconds after that. SIGUSR1 makes the panel print a fire alarm at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path

from citynerve.hil.sim.serial._bus import SerialMeterBus
from citynerve.hil.sim.serial._meters import SimCjt188Meter, SimDlt645Meter
from citynerve.hil.sim.serial._panel import FirePanelStream


async def serve(args: argparse.Namespace) -> None:
    link_dir = Path(args.link_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        ports: dict[str, str] = {}
        common = {"baudrate": args.baud, "wire_time": args.wire_time}
        if args.dlt645:
            meters = [SimDlt645Meter(a) for a in args.dlt645]
            bus = await stack.enter_async_context(
                SerialMeterBus(meters=meters, link=link_dir / "dlt645", **common)
            )
            ports["dlt645"] = bus.port
        if args.cjt188:
            water = [SimCjt188Meter(a) for a in args.cjt188]
            wbus = await stack.enter_async_context(
                SerialMeterBus(meters=water, link=link_dir / "cjt188", **common)
            )
            ports["cjt188"] = wbus.port
        panel = None
        if args.panel:
            panel = await stack.enter_async_context(FirePanelStream(link=link_dir / "firepanel"))
            ports["firepanel"] = panel.port
        if panel is not None:
            # SIGUSR1: print a fire alarm now (tests trigger it once the gateway listens: a real
            # printer port drops what was printed before the port was opened)
            alarms: set[asyncio.Task[str]] = set()

            def alarm_now() -> None:
                assert panel is not None
                task = asyncio.create_task(panel.alarm(4, 4, location="一层大厅东侧"), name="sim.panel.alarm")
                alarms.add(task)
                task.add_done_callback(alarms.discard)

            loop.add_signal_handler(signal.SIGUSR1, alarm_now)
        print(json.dumps(ports), flush=True)
        if panel is not None and args.alarm_after is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.alarm_after)
            if not stop.is_set():
                await panel.line("GST200 打印机联机")  # a banner no parser knows: a raw line
                await panel.alarm(4, 4, location="一层大厅东侧")
                if args.reset_after is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), args.reset_after)
                    if not stop.is_set():
                        await panel.reset()
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Simulated RS-485 meters and a fire panel on ptys.")
    parser.add_argument("--link-dir", required=True, help="directory for the port symlinks")
    parser.add_argument("--dlt645", action="append", default=[], help="a DL/T 645 meter address (12 digits)")
    parser.add_argument(
        "--cjt188", action="append", default=[], help="a CJ/T 188 water meter address (14 digits)"
    )
    parser.add_argument("--panel", action="store_true", help="a fire panel printer port")
    parser.add_argument("--alarm-after", type=float, help="seconds until the panel prints a fire alarm")
    parser.add_argument("--reset-after", type=float, help="seconds from the alarm to a reset")
    parser.add_argument("--baud", type=int, default=2400)
    parser.add_argument("--wire-time", action="store_true", help="pace replies like a real line")
    args = parser.parse_args(argv)
    Path(args.link_dir).mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(serve(args))
    except ValueError as err:  # a malformed address
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
