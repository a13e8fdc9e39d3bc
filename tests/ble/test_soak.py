"""Many nodes at once on one radio and one driver: every alarm raised and cleared exactly once,
no advert refused, none dropped (a short run of hil/sim/ble/soak.py)."""

from __future__ import annotations

from citynerve.hil.sim.ble.soak import run_soak


async def test_twenty_nodes_for_three_seconds() -> None:
    result = await run_soak(20, 2.0, seed=7)
    assert result.ok, result
    assert result.batches >= 20 * 3
    assert result.expected_raised > 0
