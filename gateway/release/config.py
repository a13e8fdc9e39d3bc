"""The `[update]` table: remote software updates from the platform (docs/fleet.md, "Software update").

Absent: the gateway refuses `update_start` (the platform cannot update it). Present: where the
releases live, what runs the service, and the bounds on what a remote update may use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from citynerve.gateway.api import STRICT, FiniteFloat

MIB = 1 << 20


class UpdateConfig(BaseModel):
    """Remote software updates: the signed A/B update of `citynerve update apply`, started by the platform."""

    model_config = STRICT

    root: Path = Field(
        default=Path("/opt/citynerve"),
        description="install root (releases/, the current and known-good links, update/)",
    )
    service: Literal["systemd", "process"] = Field(
        default="systemd",
        description="what runs the gateway: the systemd unit, or a detached `citynerve run` (no systemd)",
    )
    deadline_s: FiniteFloat = Field(
        default=120.0, ge=5, le=3600, description="seconds a new release has to become healthy"
    )
    settle_s: FiniteFloat = Field(
        default=5.0, ge=0.5, le=300, description="seconds between the two health checks that confirm it"
    )
    max_bundle_bytes: int = Field(
        default=256 * MIB, ge=MIB, le=4096 * MIB, description="largest bundle accepted (refused at the start)"
    )
    disk_budget_bytes: int = Field(
        default=1024 * MIB,
        ge=4 * MIB,
        description="disk an update may use: download, unpacked copy and installed release, estimated "
        "as 8 x the bundle; a bundle that would not fit is refused before any byte is sent",
    )
    min_free_bytes: int = Field(
        default=64 * MIB,
        ge=0,
        description="free space left on the disk after the update's estimate (with a copy of the outbox); "
        "`citynerve update apply` keeps it free too",
    )
    max_chunk_bytes: int = Field(
        default=256 * 1024, ge=4096, le=1 << 20, description="largest chunk accepted over MQTT"
    )
    max_chunks_per_s: FiniteFloat = Field(
        default=400.0, gt=0, le=10_000, description="chunks over this rate are dropped (sent again later)"
    )
    download_timeout_s: FiniteFloat = Field(
        default=30.0, gt=0, le=600, description="a URL download that stalls this long is resumed later"
    )
    transfer_give_up_s: FiniteFloat = Field(
        default=6 * 3600.0,
        ge=600,
        le=7 * 86400,
        description="a transfer with no new byte this long fails and its partial bundle is removed: a URL "
        "download whose server refuses or answers 5xx, chunks the platform stopped sending (counted "
        "across restarts from the files' times)",
    )
