"""A real PostgreSQL server for the tests, started on 127.0.0.1 in a temporary folder.

Debian's ``postgresql`` package (installed by ``.ci/run`` when missing) gives
the binaries; ``initdb`` refuses to run as root, so as root the cluster is
made and run as the ``postgres`` user the package creates. Every reason the
server cannot be had is said in ``PostgresServer.unavailable()``, for a skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresServer"]


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One throwaway cluster: ``start()``, ``url(dbname)``, ``create_database``, ``stop()``."""

    def __init__(self) -> None:
        self.bin = _binaries()
        self.root = Path(tempfile.mkdtemp(prefix="rawloop-pg-"))
        self.port = _free_port()
        self._as: list[str] = []

    @classmethod
    def unavailable(cls) -> str | None:
        """Why no server can be started here, or ``None``."""
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return "psycopg is not installed (pip install 'rawloop[postgres]')"
        if _binaries() is None:
            return "no PostgreSQL server binaries (apt-get install postgresql)"
        if os.geteuid() == 0:
            try:
                subprocess.run(["id", "postgres"], check=True, capture_output=True)
            except (OSError, subprocess.CalledProcessError):
                return "running as root and there is no 'postgres' user to run the server as"
            if shutil.which("runuser") is None:
                return "running as root and runuser is missing"
        return None

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as, *argv], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        assert self.bin is not None
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        data = self.root / "data"
        self._run(
            str(self.bin / "initdb"), "-D", str(data), "-U", "rawloop", "--auth=trust",
            "--no-sync", "-E", "UTF8",
        )  # fmt: skip
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"),
            "-o", options, "-w", "-t", "30", "start",
        )  # fmt: skip

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://rawloop@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """A new empty namespace (a schema, much cheaper than a database); its URL."""
        import psycopg

        deadline = time.monotonic() + 10
        while True:
            try:
                with psycopg.connect(self.url(), autocommit=True) as conn:
                    conn.execute(f'CREATE SCHEMA "{name}"')
                return f"{self.url()}?options=-csearch_path%3D{name}"
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.bin is not None and (self.root / "data").exists():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                self._run(
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.root / "data"),
                    "-m",
                    "immediate",
                    "stop",
                )
        shutil.rmtree(self.root, ignore_errors=True)
