"""BLE / BTHome benchmark: adverts decoded per second, and advert -> outbox commit latency.

    .venv/bin/python hil/bench/ble.py [--runs 5] [--adverts 20000] [--latency-adverts 200] [--json]

Decode rate: the gateway's codec on a manhole-cover payload (plain, and AES-CCM encrypted with a
prepared cipher, as the driver holds one per node), median of `--runs`; baseline in the same run:
Home Assistant's bthome-ble parser on the same bytes (ratio = ours / baseline).

Latency: one advert at a time from a bumble virtual advertiser, heard through the bumble backend,
decoded, checked against replay, through the pipeline and OutboxWriter into the SQLite outbox
(synchronous=full); measured to the outbox's commit callback. Baseline in the same run: the same
reading appended to the outbox directly. The machine is shared: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from citynerve.drivers.ble import Backend, BleBusConfig
from citynerve.drivers.bthome import BTHomeDevice, BTHomeDriver, codec
from citynerve.gateway.api import Reading
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.store import AsyncOutbox, OutboxWriter
from citynerve.hil.sim.ble import VirtualAdvertiser, VirtualRadio

KEY = bytes.fromhex("231d39c1d7cc1ab1aee224cd096db932")
MAC = "A4:C1:38:00:00:01"
OBJECTS = [(0x01, 88), (0x0C, 3.41), (0x11, False), (0x20, False), (0x2B, False), (0x3F, 12.5), (0x40, 150)]


def _rate(fn: Any, payloads: list[bytes], runs: int) -> float:
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for p in payloads:
            fn(p)
        rates.append(len(payloads) / (time.perf_counter() - t0))
    return statistics.median(rates)


def decode_rates(n: int, runs: int) -> dict[str, float]:
    from citynerve.hil.sim.ble.oracle import OracleParser

    plain = [codec.build([(0x00, i & 0xFF), *OBJECTS]) for i in range(n)]
    enc = [codec.build(OBJECTS, mac=MAC, key=KEY, counter=i + 1) for i in range(n)]
    cipher = AESCCM(KEY, tag_length=4)
    ours_plain = _rate(lambda p: codec.parse(p, mac=MAC), plain, runs)
    ours_enc = _rate(lambda p: codec.parse(p, mac=MAC, cipher=cipher), enc, runs)
    # bthome-ble keeps packet-id/counter state; fresh timestamps keep it from skipping adverts.
    oracle_plain = OracleParser()
    oracle_enc = OracleParser(KEY)
    ts = [0.0]

    def theirs(parser: OracleParser, p: bytes) -> None:
        ts[0] += 5.0
        parser.values(p, MAC, ts=ts[0])

    base_plain = _rate(lambda p: theirs(oracle_plain, p), plain[: max(n // 10, 100)], runs)
    base_enc = _rate(lambda p: theirs(oracle_enc, p), enc[: max(n // 10, 100)], runs)
    return {
        "adv_per_s_plain": ours_plain,
        "adv_per_s_encrypted": ours_enc,
        "baseline_bthome_ble_adv_per_s_plain": base_plain,
        "baseline_bthome_ble_adv_per_s_encrypted": base_enc,
        "ratio_plain": ours_plain / base_plain,
        "ratio_encrypted": ours_enc / base_enc,
    }


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


async def latency(n: int, tmp: Path) -> dict[str, float]:
    device = BTHomeDevice.model_validate(
        {
            "id": "mh-1",
            "bus": "ble0",
            "profile": "bthome-manhole-cover",
            "address": MAC,
            "key": KEY.hex(),
            "location": {"address_code": "320508001"},
            "points": {"tilt": {"name": "tilt", "object": "rotation", "unit": "°"}},
        }
    )
    outbox = AsyncOutbox(tmp / "bench.db")
    await outbox.open()
    committed = asyncio.Event()
    outbox.on_commit(lambda lane, seq: committed.set())
    writer = OutboxWriter(outbox, max_latency_s=0.001)
    pipeline = Pipeline({device.id: device}, writer)
    with VirtualRadio("bench") as radio:
        bus = BleBusConfig(id="ble0", protocol="bthome", backend=Backend.BUMBLE, transport=radio.transport)
        driver = BTHomeDriver(bus, [device], outbox)
        await driver.open()
        tasks = [asyncio.create_task(writer.run()), asyncio.create_task(driver.listen(pipeline))]
        node = VirtualAdvertiser(radio, MAC)
        await node.power_on()
        samples: list[float] = []
        try:
            for i in range(n):
                data = codec.build([(0x3F, (i % 900) / 10 + 0.1)], mac=MAC, key=KEY, counter=i + 1)
                committed.clear()
                t0 = time.perf_counter()
                node.send_now(data)
                await asyncio.wait_for(committed.wait(), 10)
                samples.append((time.perf_counter() - t0) * 1000)
            # baseline: the same kind of reading appended straight to the outbox
            base: list[float] = []
            for i in range(n):
                t0 = time.perf_counter()
                await outbox.append([Reading("mh-1", "tilt", float(i), "°", time.time())], [])
                base.append((time.perf_counter() - t0) * 1000)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await driver.close()
            await outbox.close()
    return {
        "latency_p50_ms": statistics.median(samples),
        "latency_p99_ms": _pct(samples, 0.99),
        "baseline_outbox_append_p50_ms": statistics.median(base),
        "baseline_outbox_append_p99_ms": _pct(base, 0.99),
        "latency_ratio_p50": statistics.median(samples) / statistics.median(base),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--adverts", type=int, default=20_000)
    ap.add_argument("--latency-adverts", type=int, default=200)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    result: dict[str, float] = decode_rates(args.adverts, args.runs)
    with tempfile.TemporaryDirectory(prefix="citynerve-bench-ble-") as tmp:
        result.update(asyncio.run(latency(args.latency_adverts, Path(tmp))))
    if args.json:
        print(json.dumps({k: round(v, 3) for k, v in result.items()}))
        return
    r = result
    print(
        f"decode, plain:      {r['adv_per_s_plain']:>10.0f} adv/s  "
        f"(bthome-ble {r['baseline_bthome_ble_adv_per_s_plain']:.0f}, x{r['ratio_plain']:.1f})"
    )
    print(
        f"decode, encrypted:  {r['adv_per_s_encrypted']:>10.0f} adv/s  "
        f"(bthome-ble {r['baseline_bthome_ble_adv_per_s_encrypted']:.0f}, x{r['ratio_encrypted']:.1f})"
    )
    print(
        f"advert -> outbox commit: p50 {r['latency_p50_ms']:.2f} ms, p99 {r['latency_p99_ms']:.2f} ms "
        f"(direct append p50 {r['baseline_outbox_append_p50_ms']:.2f} ms, x{r['latency_ratio_p50']:.1f})"
    )


if __name__ == "__main__":
    main()
