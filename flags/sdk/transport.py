"""The SDK's HTTP to the controller, on the standard library only (``flags`` is the
core: no httpx or requests). One keep-alive connection, used by one thread at a time:
the client's background thread is its only user.

``timeout`` bounds the whole request (connect, send, and every byte of the answer),
not each socket read: a controller or proxy that trickles one byte a second would
otherwise hold a poll for as long as it likes. A watchdog timer shuts the socket at
the deadline, which ends a read blocked in any layer (``http.client``, TLS). Answers
are capped at ``max_bytes``, so a huge one costs bounded memory.

``Transport`` is the port; tests give the client a fake that implements it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

USER_AGENT = "rollout-controller-python-sdk"
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class TransportError(Exception):
    """The controller could not be reached or did not answer (not an HTTP status)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)  # names in lower case

    def json(self) -> Any:
        return json.loads(self.body)


class Transport(Protocol):
    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Reply:
        """Send one request; raise ``TransportError`` when no answer came back."""
        ...

    def close(self) -> None: ...


class HttpTransport:
    """``http.client`` with one persistent connection, reopened after any failure."""

    def __init__(
        self, url: str, token: str, timeout: float, *, max_bytes: int = MAX_ANSWER_BYTES
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"controller url must be http(s)://host[:port][/path], got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._auth = f"Bearer {token}"
        self._connection: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Reply:
        sent = {"Authorization": self._auth, "User-Agent": USER_AGENT, **headers}
        deadline = time.monotonic() + self._timeout
        # A kept-alive connection the server has since closed fails on first use; one
        # retry on a fresh connection tells that apart from a controller that is down.
        for attempt in (1, 2):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            connection = self._connection or self._connect(remaining)
            watchdog = _Watchdog(connection, remaining)
            try:
                if connection.sock is None:
                    # Bounded by the socket timeout (the time left); the watchdog
                    # cannot reach a socket that does not exist yet.
                    connection.connect()
                    if watchdog.fired:
                        raise TimeoutError("connected past the deadline")
                connection.request(method, self._prefix + path, body=body, headers=sent)
                response = connection.getresponse()
                data = response.read(self._max_bytes + 1)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                watchdog.cancel()
                self.close()
                if watchdog.fired:
                    break
                if attempt == 2 or not _stale_connection(exc):
                    raise TransportError(f"{type(exc).__name__}: {exc}") from exc
                continue
            if not watchdog.cancel():
                self.close()
                break
            if len(data) > self._max_bytes:
                self.close()
                raise TransportError(f"answer over {self._max_bytes} bytes")
            if response.will_close:
                self.close()
            names = {name.lower(): value for name, value in response.getheaders()}
            return Reply(response.status, data, names)
        raise TransportError(f"no whole answer within {self._timeout:g}s")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        self._connection = kind(self._host, self._port, timeout=timeout)
        return self._connection


class _Watchdog:
    """Shuts the connection's socket at the deadline, unless cancelled first."""

    def __init__(self, connection: http.client.HTTPConnection, seconds: float) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> bool:
        """Stop the timer; ``False`` when it had already fired (the answer is cut off)."""
        self._timer.cancel()
        with self._lock:
            self._done = True
            return not self.fired

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            sock = self._connection.sock
        if sock is not None:
            # The plain socket's shutdown, even under TLS: it wakes a blocked read
            # without touching the TLS state the reading thread is using.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _stale_connection(exc: Exception) -> bool:
    return isinstance(exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError)
