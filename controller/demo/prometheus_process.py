"""A real Prometheus server in a child process, for the demo and the integration tests.

Uses the Debian package's binary; the config, the TSDB and the log live in a work
directory that is removed on stop unless the caller passed its own.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

DEFAULT_BINARY = "/usr/bin/prometheus"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# A free port is chosen, closed, then bound by the child: another process (or a
# connection's local port) may take it in between. Then another port, this many times.
PORT_ATTEMPTS = 3
_POLL_S = 0.1


class PrometheusNotFound(RuntimeError):
    pass


class PrometheusStartError(RuntimeError):
    pass


class PrometheusProcess:
    """``with PrometheusProcess(["127.0.0.1:8000"]) as prom: prom.url``"""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        scrape_interval: str = "1s",
        port: int | None = None,
        binary: str | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.port = port
        self.binary = binary
        self._given_workdir = workdir
        self._workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("Prometheus is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    def __enter__(self) -> PrometheusProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        chosen = self.port is None
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start_once()
                return
            except PrometheusStartError as exc:
                if not chosen or attempt == PORT_ATTEMPTS or not _port_taken(str(exc)):
                    raise
                self.port = None

    def _start_once(self) -> None:
        binary = _find_binary(self.binary)
        workdir = self._make_workdir()
        config = workdir / "prometheus.yml"
        config.write_text(self._config_text())
        (workdir / "data").mkdir(exist_ok=True)
        self._log_path = workdir / "prometheus.log"
        if self.port is None:
            self.port = free_port()
        with self._log_path.open("wb") as log:
            # The child keeps its own copy of the descriptor; ours can close now.
            self._process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=2h",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            self._wait_ready(READY_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _terminate(process)
        if self._workdir is not None and self._given_workdir is None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self._workdir = None

    def log_tail(self, lines: int = 20) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        text = self._log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_for_series(self, query: str, timeout: float) -> None:
        """Poll until ``query`` returns a non-empty result (e.g. after the first scrapes)."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                result = self._instant_query(query)
            except (OSError, ValueError) as exc:  # URLError is an OSError
                last = str(exc)
            else:
                if result:
                    return
                last = "empty result"
            time.sleep(_POLL_S)
        raise TimeoutError(f"no series for {query!r} within {timeout:g}s ({last})")

    def _instant_query(self, query: str) -> object:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        result: object = body["data"]["result"]
        return result

    def _config_text(self) -> str:
        # JSON is valid YAML, and json.dumps quotes the targets safely.
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {"job_name": "demo", "static_configs": [{"targets": self.targets}]},
            ],
        }
        return json.dumps(config, indent=2) + "\n"

    def _make_workdir(self) -> Path:
        if self._given_workdir is not None:
            self._given_workdir.mkdir(parents=True, exist_ok=True)
            self._workdir = self._given_workdir
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        return self._workdir

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise PrometheusStartError(
                    f"prometheus exited with code {code}:\n{self.log_tail()}"
                )
            if _is_ready(f"{self.url}/-/ready"):
                return
            time.sleep(_POLL_S)
        raise PrometheusStartError(
            f"prometheus not ready at {self.url} after {timeout:g}s:\n{self.log_tail()}"
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _find_binary(binary: str | None) -> str:
    candidate = binary or shutil.which("prometheus") or DEFAULT_BINARY
    if not Path(candidate).is_file():
        raise PrometheusNotFound(
            f"prometheus binary not found ({candidate}); "
            "install Debian's package: apt-get install -y prometheus"
        )
    return candidate


def _port_taken(log: str) -> bool:
    return "address already in use" in log


def _is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, ValueError):  # refused while starting; 503 while replaying the WAL
        return False


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_S)
