"""The storage fault scenarios of hil/faults/store.py, against the real `citynerve run` (a real
Modbus peer, Mosquitto and the reference platform consumer where delivery matters).

Each test runs the same function the fault runner (`python -m citynerve.hil.bench.faults`) runs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from citynerve.hil.faults import store


def test_damaged_page_costs_only_its_rows_and_is_announced(tmp_path: Path) -> None:
    asyncio.run(store.damaged_page(tmp_path))


def test_zero_length_outbox_starts_a_new_epoch_without_false_duplicates(tmp_path: Path) -> None:
    asyncio.run(store.zero_length_outbox(tmp_path))


def test_corrupt_outbox_is_moved_aside_and_the_gateway_goes_on(tmp_path: Path) -> None:
    asyncio.run(store.corrupt_outbox_quarantined(tmp_path))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_disk_full_evicts_telemetry_for_alarms_and_recovers(tmp_path: Path) -> None:
    asyncio.run(store.disk_full(tmp_path))


def test_bad_timestamp_record_is_refused_and_never_blocks(tmp_path: Path) -> None:
    asyncio.run(store.bad_timestamp_record(tmp_path))
