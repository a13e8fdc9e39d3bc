"""The real `citynerve run` under a wall clock that steps (libfaketime), both directions, and a real
Mosquitto for command replay. The fault runner runs the same scenarios (hil/faults/time.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from citynerve.hil.faults.time import (
    clock_step_back,
    clock_step_forward,
    command_replay_after_clock_back,
    maintenance_restored_before_sync,
    unsynced_events_corrected_after_sync,
)
from citynerve.hil.sim.clock import libfaketime


def test_libfaketime_is_installed() -> None:
    assert libfaketime() is not None, "apt-get install faketime (.ci/run does this)"


def test_clock_step_forward_two_days(short_dir: Path) -> None:
    detail = asyncio.run(clock_step_forward(short_dir))
    assert "+2 days" in detail


def test_clock_step_back_two_days(short_dir: Path) -> None:
    detail = asyncio.run(clock_step_back(short_dir))
    assert "-2 days" in detail


def test_command_replay_after_clock_back(short_dir: Path) -> None:
    detail = asyncio.run(command_replay_after_clock_back(short_dir))
    assert "expired" in detail or "replayed" in detail


def test_events_stamped_unsynchronised_are_sent_corrected(short_dir: Path) -> None:
    detail = asyncio.run(unsynced_events_corrected_after_sync(short_dir))
    assert "ts_corrected" in detail


def test_a_maintenance_window_restored_at_a_1970_boot_ends_when_ntp_syncs(short_dir: Path) -> None:
    detail = asyncio.run(maintenance_restored_before_sync(short_dir))
    assert "ended and audited" in detail
