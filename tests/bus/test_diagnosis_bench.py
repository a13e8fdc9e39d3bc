"""The diagnosis benchmark runs (two of its faults here; `python -m citynerve.hil.bench.diagnosis`
runs all)."""

from __future__ import annotations

from citynerve.hil.bench.diagnosis import FAULTS, run


async def test_bench_names_the_injected_causes() -> None:
    outcomes = await run(["wrong_baud_probe", "duplicate_address", "wrong_ble_key"])
    assert [o.fault for o in outcomes] == [
        "wrong baud rate: probe on the live line",
        "two meters on one address",
        "BLE node with another key",
    ]
    assert all(o.right for o in outcomes), [o.to_dict() for o in outcomes]
    assert all(o.to_dict()["minutes_to_cause"] is not None for o in outcomes)
    assert len(FAULTS) >= 12
