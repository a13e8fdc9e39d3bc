"""A private PostgreSQL server for tests and trials: `initdb` in a temporary directory, `postgres` on a
free loopback port, trust authentication on loopback only, removed on exit. Needs Debian's
`postgresql` package (its binaries under /usr/lib/postgresql/<version>/bin). PostgreSQL refuses to
run as root: as root the server runs as the `postgres` user (the package creates it).

    with PostgresServer() as pg:
        store = PgPlatformStore(pg.dsn)
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from citynerve.hil.platform.broker import free_port


def find_pg_bin(name: str) -> str:
    """Path of a PostgreSQL server binary (`initdb`, `postgres`): PATH, then Debian's layout."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise FileNotFoundError(f"{name} not found: install Debian's postgresql package")
    return candidates[-1]


class PostgresServer:
    """`postgres` on 127.0.0.1:<free port>; `dsn` names its `postgres` database as user `postgres`."""

    def __init__(self, *, start_timeout_s: float = 60.0) -> None:
        self.port = free_port()
        self.start_timeout_s = start_timeout_s
        self.dir = Path(tempfile.mkdtemp(prefix="citynerve-pg-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._user = ["runuser", "-u", "postgres", "--"]

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def __enter__(self) -> PostgresServer:
        data = self.dir / "data"
        subprocess.run(
            [
                *self._user,
                find_pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.proc = subprocess.Popen(
            [
                *self._user,
                find_pg_bin("postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",  # a throwaway server: durability is not what these tests check
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "server.log").open("wb"),
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + self.start_timeout_s
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.dir / 'server.log').read_text()[-2000:]}")
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # polling a starting server: no event to wait on

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None:
            self.proc.terminate()  # smart shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
