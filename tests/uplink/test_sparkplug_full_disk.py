"""A Sparkplug session on a full disk (a real small tmpfs filled by another file, as the outbox's
folder fills up): the next bdSeq, saved beside the outbox before every connect, cannot be written.
The session connects with the bdSeq in memory and saves it again at the next session; it used to
fail every connect on the ENOSPC, with a traceback each time, for as long as the disk was full."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from citynerve.gateway.backoff import Backoff
from citynerve.gateway.uplink.sparkplug import BdSeqFile, EdgeNode, SparkplugSession, StoredRecord
from citynerve.hil.faults.store import fill, small_disk
from citynerve.hil.platform import MosquittoBroker
from tests.uplink.conftest import wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)"
)


async def test_a_session_connects_while_the_disk_is_full_and_saves_the_bdseq_once_there_is_room(
    broker: MosquittoBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="citynerve")
    with small_disk(tmp_path / "disk", "64k") as disk:
        bd_file = BdSeqFile(disk / "sparkplug-scada.bdseq")
        bd_file.save(5)  # written while there was room
        filler = fill(disk)
        node = EdgeNode(group_id="city", edge_node_id="gw-1")
        queue: asyncio.Queue[StoredRecord] = asyncio.Queue()
        session = SparkplugSession(
            node, queue, brokers=[broker.url], bd_seq_file=bd_file, backoff=Backoff(0.1, 0.2, 0.0)
        )
        async with session as s:
            await s.wait_born(timeout_s=10)
            assert node.bd_seq == 5 and s.bd_seq_unsaved and bd_file.load() == 5
            assert sorted(os.listdir(disk)) == ["filler", "sparkplug-scada.bdseq"]  # no temp file left

            # The broker restarts while the disk is still full: every connect tries the save again.
            broker.stop()

            async def failed_twice() -> bool:
                return s.connect_failures >= 2

            await wait_for(failed_twice)
            filler.unlink()  # room again
            broker.start()
            await s.wait_born(timeout_s=10)
            assert not s.bd_seq_unsaved and bd_file.load() == node.next_bd_seq
    lines = [r for r in caplog.records if r.name.startswith("citynerve")]
    assert not [r for r in lines if r.exc_info]  # no traceback
    assert len([r for r in lines if "cannot save the next bdSeq" in r.getMessage()]) == 1
    assert len([r for r in lines if "bdSeq is saved to" in r.getMessage()]) == 1
