"""The SDK's HTTP to the controller, on the standard library only (``flags`` is the
core: no httpx or requests). One keep-alive connection, used by one thread at a time:
the client's background thread is its only user.

``Transport`` is the port; tests give the client a fake that implements it.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

USER_AGENT = "rollout-controller-python-sdk"


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

    def __init__(self, url: str, token: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"controller url must be http(s)://host[:port][/path], got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._auth = f"Bearer {token}"
        self._connection: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Reply:
        sent = {"Authorization": self._auth, "User-Agent": USER_AGENT, **headers}
        # A kept-alive connection the server has since closed fails on first use; one
        # retry on a fresh connection tells that apart from a controller that is down.
        for attempt in (1, 2):
            connection = self._connection or self._connect()
            try:
                connection.request(method, self._prefix + path, body=body, headers=sent)
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2 or not _stale_connection(exc):
                    raise TransportError(f"{type(exc).__name__}: {exc}") from exc
                continue
            if response.will_close:
                self.close()
            names = {name.lower(): value for name, value in response.getheaders()}
            return Reply(response.status, data, names)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        self._connection = kind(self._host, self._port, timeout=self._timeout)
        return self._connection


def _stale_connection(exc: Exception) -> bool:
    return isinstance(exc, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError)
