"""A small "gateway process" for the SIGKILL tests: AsyncOutbox + OutboxWriter + Uplink, fed by a
generator of readings (and an alarm every K readings). Stands in for `citynerve run` so the uplink's
crash behaviour is tested on its own.

    python -m tests.uplink.gateway_proc --outbox F --broker mqtt://127.0.0.1:P [--broker URL2 ...]
        --generate N [--e2e]
        [--offline: fill the outbox with no uplink, as a gateway whose uplink was down, and exit]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from citynerve.gateway.api import Event, EventState, Reading, Severity
from citynerve.gateway.store import AsyncOutbox, OutboxWriter
from citynerve.gateway.uplink import Uplink, UpstreamConfig
from tests.uplink.conftest import platform_key_file


async def main(args: argparse.Namespace) -> None:
    cfg = UpstreamConfig.model_validate(
        {
            "brokers": args.broker,  # failover order (a cluster's nodes)
            "protocol": args.protocol,
            "e2e_ack": args.e2e,
            "e2e_resend_after_s": 2.0,
            "max_batch_readings": args.batch,
            "backoff": {"initial_s": 0.1, "max_s": 0.5, "jitter": 0.2},
            "replay_max_msgs_per_s": args.replay_rate,
            "replay_burst": 10,
            # e2e acks are signed with the platform's key (the test consumer holds the same one)
            **({"commands": {"hmac_key_file": str(platform_key_file())}} if args.e2e else {}),
        }
    )
    async with AsyncOutbox(args.outbox) as outbox:
        writer = OutboxWriter(outbox, max_latency_s=0.05, max_rows=500)
        writer_task = asyncio.create_task(writer.run(), name="writer")
        if args.offline:  # fill the outbox as a gateway with its uplink down would, then stop
            await generate(writer, args)
            print(json.dumps({"generated": args.generate}), flush=True)
            writer_task.cancel()
            return
        async with Uplink(cfg, gateway_id=args.gateway_id, outbox=outbox, inventory=lambda: []) as up:
            print(json.dumps({"started": True}), flush=True)
            await generate(writer, args)
            print(json.dumps({"generated": args.generate}), flush=True)
            # Drain, then report and stay until killed or until the backlog is gone.
            while True:
                stats = await outbox.stats()
                if all(s.rows == 0 for s in stats.lanes):
                    break
                await asyncio.sleep(0.1)
            print(json.dumps({"drained": True, "uplink": up.snapshot().to_dict()}), flush=True)
            if args.stay:
                await asyncio.Event().wait()
        writer_task.cancel()


async def generate(writer: OutboxWriter, args: argparse.Namespace) -> None:
    for i in range(args.start, args.start + args.generate):
        writer.put_readings([Reading("wm-1", "flow", float(i), "m3/h", 1_780_000_000.0 + i)])
        if args.alarm_every and i % args.alarm_every == 0:
            writer.put_event(
                Event(
                    "smoke-1",
                    "smoke",
                    EventState.RAISED,
                    Severity.CRITICAL,
                    1_780_000_000.0 + i,
                    message=f"alarm {i}",
                )
            )
        if i % 100 == 99:
            await asyncio.sleep(100 / args.rate)
    await writer.flush()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--outbox", required=True)
    p.add_argument("--broker", required=True, action="append", help="repeat: failover order")
    p.add_argument("--protocol", default="5", choices=("5", "3.1.1"))
    p.add_argument("--gateway-id", default="gw-proc")
    p.add_argument("--generate", type=int, default=0)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--rate", type=float, default=5000.0, help="readings per second")
    p.add_argument("--alarm-every", type=int, default=500)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--replay-rate", type=float, default=2000.0)
    p.add_argument("--e2e", action="store_true")
    p.add_argument("--stay", action="store_true")
    p.add_argument("--offline", action="store_true", help="only fill the outbox (no uplink), then exit")
    try:
        asyncio.run(main(p.parse_args()))
    except KeyboardInterrupt:
        sys.exit(130)
