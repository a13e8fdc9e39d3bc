"""A silent part of a bus must not starve its live devices (real pymodbus servers, the real
ModbusDriver and BusOwner, over TCP and over RTU on a pty pair): hil/bench/silent_bus.py at a
test's size. A power cut silences half the smoke detectors of a bus; the live ones keep their poll
interval within one failing transaction, a smoke alarm on one of them is read within that, and the
silent ones still go offline, each once, within the stated bound (docs/modbus.md, "A silent part
of a bus")."""

from __future__ import annotations

import pytest

from citynerve.hil.bench.silent_bus import SilentBusCase, run_case


@pytest.mark.parametrize(
    ("transport", "count", "failing_cost_s"),
    [
        ("tcp", 12, 0.2),  # a silent transaction costs its timeout
        ("rtu", 8, 0.4),  # RTU keeps the line quiet for a grace of the timeout after it: twice
    ],
)
async def test_live_detectors_keep_their_interval_while_half_the_bus_is_silent(
    transport: str, count: int, failing_cost_s: float
) -> None:
    case = SilentBusCase(
        live=count,
        silent=count,
        interval_s=0.5,
        timeout_s=0.2,
        retries=1,
        offline_after=3,
        backoff_initial_s=1.0,
        backoff_max_s=4.0,
        transport=transport,
        offline_limit_s=60.0,
        probe_window_s=4.0,
    )
    result = await run_case(case)
    # The live detectors' polls come within one failing transaction of their interval (plus the
    # others' polls and this shared machine's slack), while the silent ones fail and once offline.
    # The old owner gave every failing detector (1 + retries) timeouts at every 0.5 s round until
    # offline: a live detector waited count x 2 x failing_cost_s (4.8 s TCP, 6.4 s RTU).
    bound = case.interval_s + failing_cost_s + 0.5
    assert result.failing_gap_s <= bound, result
    assert result.smoke_failing_s <= bound, result
    assert result.offline_gap_s <= bound, result
    assert result.smoke_offline_s <= bound, result
    # Each silent detector went offline once, within the bound: its first failed transaction (one
    # each, in the first round), then retries + offline_after - 1 more, one per failing turn.
    turns = (case.retries + case.offline_after) * case.silent
    assert result.offline_s <= case.silent * failing_cost_s + turns * (failing_cost_s + 0.1) + 2.0, result
    assert result.offline_events == case.silent and result.false_offline == [], result
