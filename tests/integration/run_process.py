"""`citynerve run -c FILE` as a child process of a test, its JSON log read as it runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path


class Run:
    """`citynerve run -c FILE` as a child process; `until(text)` waits for a log message."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.messages: list[str] = []

    async def __aenter__(self) -> Run:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(self.config),
            cwd=self.config.parent, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        await self.until("rules: ")
        return self

    async def until(self, text: str, timeout_s: float = 30.0) -> str:
        assert self.proc.stderr is not None
        async with asyncio.timeout(timeout_s):
            while True:
                for m in self.messages:
                    if text in m:
                        return m
                line = await self.proc.stderr.readline()
                if not line:
                    raise AssertionError("the gateway ended:\n" + "\n".join(self.messages[-20:]))
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self.messages.append(str(json.loads(line)["msg"]))

    async def __aexit__(self, *exc: object) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()  # a clean stop: the rules snapshot and the alarm registry are saved
            await asyncio.wait_for(self.proc.wait(), 30)
