"""The `[store]` table of the gateway config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MIB = 1024 * 1024


class StoreConfig(BaseModel):
    """Where the outbox lives and how it commits.

    `path` is relative to the config file's directory (the config loader resolves it).
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
        default=200, ge=1, le=60_000, description="max latency of a batched telemetry commit"
    )
    commit_max_rows: int = Field(default=5000, ge=1, le=1_000_000, description="max readings per commit")
    synchronous: Literal["normal", "full"] = Field(
        default="full", description="full: durable on power loss; normal: durable on process crash"
    )
