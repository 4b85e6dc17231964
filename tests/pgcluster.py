"""A private PostgreSQL cluster for tests that stop and start the database server.

The machine's shared cluster on 5432 is never stopped: a test that takes the database
away builds its own in a temporary directory (initdb, then pg_ctl on a free port),
and removes it afterwards."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.serving import free_port

DATABASE = "rollout"


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory, if initdb is there."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    return Path(found[-1]).parent if found else None


def _major(path: str) -> int:
    version = Path(path).parent.parent.name
    return int(version) if version.isdigit() else 0


@dataclass
class PrivateCluster:
    bin: Path
    datadir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("start", "-w", "-t", "30", "-o", options, "-l", str(self.datadir / "log"))

    def stop(self) -> None:
        """Fast shutdown: open sessions are cut, as when a database host goes away."""
        self._pg_ctl("stop", "-w", "-t", "30", "-m", "fast")

    def running(self) -> bool:
        status = self._run([str(self.bin / "pg_ctl"), "-D", str(self.datadir), "status"])
        return status.returncode == 0

    def _pg_ctl(self, *args: str) -> None:
        result = self._run([str(self.bin / "pg_ctl"), "-D", str(self.datadir), *args])
        if result.returncode != 0:
            log = (self.datadir / "log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl {args[0]} failed: {result.stdout}\n{log}")

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _as_postgres(argv), capture_output=True, text=True, timeout=60, check=False
        )


def _as_postgres(argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; as another user the test runs it as itself.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started cluster with an empty ``rollout`` database; stopped and removed after."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("no /usr/lib/postgresql/*/bin/initdb")
    # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
    datadir = Path(tempfile.mkdtemp(prefix="rollout-pg-"))
    if os.geteuid() == 0:
        shutil.chown(datadir, "postgres", "postgres")
    cluster = PrivateCluster(bin_dir, datadir, free_port())
    try:
        init = subprocess.run(
            _as_postgres(
                [str(bin_dir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres", "-N"]
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        cluster.start()
        admin = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
        yield cluster
    finally:
        if cluster.running():
            cluster.stop()
        shutil.rmtree(datadir, ignore_errors=True)
