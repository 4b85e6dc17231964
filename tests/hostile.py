"""Hostile peers: real TCP servers on loopback that misbehave on purpose.

A ``HostilePeer`` accepts connections on ``127.0.0.1`` and hands each request to a
behaviour: answer normally, trickle one byte at a time, hang, answer garbage, answer
something huge. Tests point the controller (or the SDK, or a webhook) at it and check
that a misbehaving peer costs a bounded amount of time and memory and ends in a clear
error. Every behaviour ends when the peer stops, so nothing outlives the test.

    with HostilePeer(trickle(prometheus_answer(0.5), every=2.0)) as peer:
        gates = PrometheusGates(peer.url, timeout_seconds=1)
        ...
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

_HEAD_LIMIT = 1 << 16
_READ_TIMEOUT = 10.0


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urllib.parse.urlsplit(self.target).path

    @property
    def params(self) -> dict[str, str]:
        """Query-string and form parameters, last one wins."""
        query = urllib.parse.urlsplit(self.target).query
        pairs = urllib.parse.parse_qsl(query)
        if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            pairs += urllib.parse.parse_qsl(self.body.decode("utf-8", "replace"))
        return dict(pairs)


@dataclass
class Connection:
    """What a behaviour gets: the socket, the request, and an event set at stop."""

    sock: socket.socket
    request: Request
    stopping: threading.Event

    def send(self, data: bytes) -> bool:
        """Send all of ``data``; False once the client has gone away."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the peer stops first; True while it keeps running."""
        return not self.stopping.wait(seconds)


Behaviour = Callable[[Connection], None]


@dataclass
class HostilePeer:
    behaviour: Behaviour
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._accepter = threading.Thread(target=self._accept, name="hostile-accept", daemon=True)

    def __enter__(self) -> HostilePeer:
        self._accepter.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._accepter.join(timeout=5)
        self._listener.close()
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for sock in socks:
            _close(sock)
        for thread in threads:
            thread.join(timeout=5)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._socks)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            with self._lock:
                self._socks.append(sock)
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(_READ_TIMEOUT)
            while not self._stopping.is_set():
                request = _read_request(sock)
                if request is None:
                    return
                with self._lock:
                    self.requests.append(request)
                self.behaviour(Connection(sock, request, self._stopping))
                if request.headers.get("connection", "").lower() != "keep-alive":
                    return
        except OSError:
            return
        finally:
            _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _read_request(sock: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > _HEAD_LIMIT:
            return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = ([*lines[0].split(" ", 2), "", ""])[:3]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    while len(body) < length:
        chunk = sock.recv(min(65536, length - len(body)))
        if not chunk:
            break
        body += chunk
    return Request(method, target, headers, body)


# --- answers -------------------------------------------------------------------------


def http_response(
    body: bytes,
    status: str = "200 OK",
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}"]
    lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def prometheus_json(result: Any, result_type: str = "vector") -> bytes:
    """A Prometheus instant-query answer holding ``result`` as ``data.result``."""
    payload = {"status": "success", "data": {"resultType": result_type, "result": result}}
    return json.dumps(payload).encode()


def prometheus_answer(value: float | str) -> bytes:
    """A whole HTTP answer: a one-series vector with ``value``."""
    sample = {"metric": {}, "value": [1700000000.0, str(value)]}
    return http_response(prometheus_json([sample]))


# --- behaviours ----------------------------------------------------------------------


def respond(response: bytes | Callable[[Request], bytes]) -> Behaviour:
    """Answer every request with ``response`` (or what it returns for the request)."""

    def behaviour(conn: Connection) -> None:
        conn.send(response(conn.request) if callable(response) else response)

    return behaviour


def trickle(response: bytes, every: float = 2.0, chunk: int = 1) -> Behaviour:
    """Send ``chunk`` bytes of ``response`` every ``every`` seconds: each socket read
    succeeds, so only a deadline on the whole request ends it."""

    def behaviour(conn: Connection) -> None:
        for start in range(0, len(response), chunk):
            if not conn.send(response[start : start + chunk]) or not conn.wait(every):
                return

    return behaviour


def hang() -> Behaviour:
    """Read the request, never answer, keep the connection open until the peer stops."""

    def behaviour(conn: Connection) -> None:
        conn.stopping.wait()

    return behaviour


def huge(size: int, status: str = "200 OK") -> Behaviour:
    """A valid answer head announcing ``size`` bytes, then that much JSON-ish filler."""

    def behaviour(conn: Connection) -> None:
        head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
        if not conn.send(head.encode()):
            return
        block = b"[" + b"1," * 32767 + b"1]"
        for sent in _chunks(size, len(block)):
            if conn.stopping.is_set() or not conn.send(block[:sent]):
                return

    return behaviour


def _chunks(total: int, size: int) -> Iterator[int]:
    while total > 0:
        yield min(size, total)
        total -= size


def slam() -> Behaviour:
    """Close the connection without a byte of answer."""

    def behaviour(conn: Connection) -> None:
        _close(conn.sock)

    return behaviour
