"""The benchmark script keeps working (figures come from `python -m citynerve.hil.bench.serial_bus`)."""

from __future__ import annotations

from citynerve.hil.bench.serial_bus import _frames, bench_decode


def test_bench_frames_are_valid_and_decode_keys() -> None:
    from citynerve.drivers.cjt188 import codec as cjt
    from citynerve.drivers.dlt645 import codec as dlt

    dlt_frames, cjt_frames = _frames()
    assert all(dlt.parse_frame(f).is_reply for f in dlt_frames)
    assert all(cjt.parse_frame(f).is_reply for f in cjt_frames)
    result = bench_decode(1, rounds=20)
    assert set(result) == {
        "decode_frames_per_s",
        "baseline_dlt645_pkg_frames_per_s",
        "dlt645_parse_frames_per_s",
        "parse_ratio_vs_baseline",
    }
    assert result["decode_frames_per_s"] > 0


async def test_modbus_rtu_cycle_counts_the_wire_and_prints_its_keys() -> None:
    from citynerve.hil.bench.serial_rtu import bench_rtu_cycle

    result = await bench_rtu_cycle(1, baud=19200)
    assert set(result) == {
        "modbus_rtu_cycle_s",
        "modbus_rtu_wire_floor_s",
        "modbus_rtu_cycle_ratio",
        "modbus_rtu_ratio_over_t35_floor",
        "modbus_rtu_transactions_per_cycle",
    }
    assert result["modbus_rtu_transactions_per_cycle"] >= 6  # every device of the building, once or more
    # the link paces every byte, so no cycle can beat the wire time of the bytes it counted
    assert result["modbus_rtu_cycle_ratio"] >= 1.0
    assert result["modbus_rtu_wire_floor_s"] > 0
