"""The `[store]` table of the gateway config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024 * 1024
TELEMETRY_WINDOW_MS = 5000
"""Default telemetry commit window: what a power cut can lose of readings (docs/store.md)."""


class StoreConfig(BaseModel):
    """Where the outbox lives and how it commits.

    `path` is relative to the config file's directory (the config loader resolves it).
    `commit_interval_ms` is the telemetry window: readings are committed (and with "full",
    fsynced) at most this long after they arrive, so a power cut loses at most the readings of the
    last window; events are committed at once, whatever the window. Few commits are what keeps the
    SD card's wear low (docs/store.md: figures and card life).
    `synchronous`: "full" fsyncs the WAL at every commit, so a commit survives power loss;
    "normal" survives a crash of the gateway process (kill -9) but the last commits before a
    power cut may be rolled back (the file stays consistent). See docs/store.md.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    path: str = Field(default="var/citynerve.db", min_length=1, description="SQLite outbox file")
    max_bytes: int = Field(
        default=256 * MIB, ge=64 * 1024, description="size cap; oldest telemetry dropped first above it"
    )
    commit_interval_ms: int = Field(
        default=TELEMETRY_WINDOW_MS,
        ge=1,
        le=60_000,
        description="telemetry window: readings committed at most this late (what a power cut can lose)",
    )
    commit_max_rows: int = Field(default=1000, ge=1, le=1_000_000, description="max readings per commit")
    synchronous: Literal["normal", "full"] = Field(
        default="full", description="full: durable on power loss; normal: durable on process crash"
    )
