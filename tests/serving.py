"""Start a real ``rollout serve`` process for integration and end-to-end tests."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ADMIN_TOKEN = "test-admin-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    database_url: str

    def client(self, token: str | None = ADMIN_TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=15)

    def token(self, role: str, name: str | None = None) -> str:
        # Token names are unique among live tokens: a fresh default for every call.
        name = name or f"test-{role}-{secrets.token_hex(3)}"
        with self.client() as c:
            r = c.post("/api/v1/tokens", json={"name": name, "role": role})
            r.raise_for_status()
            return str(r.json()["token"])

    def cli_env(self, token: str | None = ADMIN_TOKEN) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
        env["ROLLOUT_SERVER"] = self.url
        if token:
            env["ROLLOUT_TOKEN"] = token
        return env


def wait_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not healthy after {timeout}s:\n{log.read_text()}")


@contextmanager
def running_server(
    workdir: Path,
    *,
    database_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    port: int | None = None,  # a restart on the same port, as clients know it
) -> Iterator[Server]:
    port = port or free_port()
    database_url = database_url or f"sqlite:///{workdir / 'rollout.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLOUT_")}
    env.update(
        ROLLOUT_DATABASE_URL=database_url,
        ROLLOUT_ADMIN_TOKEN=ADMIN_TOKEN,
        ROLLOUT_PORT=str(port),
        ROLLOUT_HOST="127.0.0.1",
        ROLLOUT_SCHEDULER="false",
        ROLLOUT_LOG_LEVEL="warning",
        # Tests fire changes faster than any person; test_ratelimit.py turns it back on.
        ROLLOUT_RATE_LIMIT_PER_MIN="0",
    )
    env.update(extra_env or {})
    log = workdir / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "controller", "serve", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process, log)
        yield Server(url=url, process=process, log=log, database_url=database_url)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not exited within 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def plan_yaml(name: str, flag: str | None = None, **overrides: Any) -> str:
    """A small gate-less plan (a timed ramp) for API tests."""
    steps = overrides.get(
        "steps",
        "  - {stage: shadow, hold: 1h}\n"
        "  - {stage: canary, percent: 5, hold: 1h}\n"
        "  - {stage: graduated, percent: 50, hold: 1h}\n"
        "  - {stage: regional, regions: [us-west-1], hold: 1h}\n"
        "  - {stage: full, approval: true}\n",
    )
    return f"rollout: {name}\nflag: {flag or name}\ninterval: 1m\nsteps:\n{steps}"
