"""A small HTTP/1.1 client whose deadline covers the whole request.

Socket timeouts in most clients apply to each read: a peer that sends one byte every
two seconds never trips a 5 s timeout and holds the caller for as long as it likes.
``fetch`` gives connect, TLS, sending and every byte of the answer one deadline, and
stops reading at ``max_bytes``, so a slow or huge answer costs bounded time and memory.

One new connection per call and no shared state, so it is safe from any thread.
Redirects are not followed. Errors form one tree::

    HttpFailure            str() is a short reason for a person, never the URL
    ├── DeadlineExceeded   the whole request did not finish within ``timeout``
    ├── AnswerTooLarge     the answer's head or body is beyond its limit
    ├── Unreachable        refused, reset, name not found, closed before an answer
    └── BadAnswer          not HTTP, broken chunked encoding, cut short
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_HEAD_LIMIT = 64 * 1024  # status line and headers; real servers send a few hundred bytes
_LINE_LIMIT = 1024  # one chunk-size line
_RECV = 65536


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]  # names lower-case; repeated headers joined with ", "
    body: bytes


class HttpFailure(Exception):
    """The request did not give an answer; ``str()`` says why, for a person."""


class DeadlineExceeded(HttpFailure):
    pass


class AnswerTooLarge(HttpFailure):
    pass


class Unreachable(HttpFailure):
    pass


class BadAnswer(HttpFailure):
    pass


def fetch(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float,
    max_bytes: int,
) -> HttpAnswer:
    """Send one request and read the whole answer, all within ``timeout`` seconds.

    Userinfo in ``url`` (``http://user:pass@host/``) is sent as basic auth unless
    ``headers`` already hold an Authorization header.
    """
    deadline = time.monotonic() + timeout
    target = _Target.parse(url)
    request = _request_bytes(method, target, headers or {}, body)
    conn = _Connection(deadline, timeout)
    try:
        conn.open(target)
        conn.send(request)
        return _read_answer(conn, method, max_bytes)
    except TimeoutError:
        raise DeadlineExceeded(conn.timeout_text) from None
    except ssl.SSLError as exc:
        raise Unreachable(f"TLS failed: {exc.reason or exc.strerror or 'handshake'}") from None
    except ConnectionRefusedError:
        raise Unreachable("connection refused") from None
    except ConnectionResetError:
        raise Unreachable("connection reset") from None
    except OSError as exc:
        raise Unreachable((exc.strerror or type(exc).__name__).lower()) from None
    finally:
        conn.close()


# --- the request ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent on the request line
    authorization: str | None  # basic auth from userinfo

    @classmethod
    def parse(cls, url: str) -> _Target:
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError:
            raise HttpFailure("invalid URL") from None
        if parts.scheme not in ("http", "https"):
            raise HttpFailure(f"unsupported URL scheme {parts.scheme!r}; use http or https")
        if not parts.hostname:
            raise HttpFailure("URL has no host")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(
            scheme=parts.scheme,
            host=parts.hostname,
            port=port or (443 if parts.scheme == "https" else 80),
            path=path,
            authorization=_basic_auth(parts.username, parts.password),
        )

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _basic_auth(username: str | None, password: str | None) -> str | None:
    if username is None:
        return None
    user = urllib.parse.unquote(username)
    secret = urllib.parse.unquote(password or "")
    return basic_authorization(user, secret)


def basic_authorization(username: str, password: str) -> str:
    """The Authorization header value for HTTP basic auth."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def redact_url(url: str) -> str:
    """``url`` with any userinfo shown as ``***``: ``http://***@host:9090/``.

    Everything up to the last ``@`` goes, so a password holding ``/`` or ``?`` (which
    URL parsers then take for a path) is hidden too; over-redacting a path is harmless.
    """
    if "@" not in url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    shown = f"{scheme}://" if sep else ""
    return f"{shown}***@{rest.rpartition('@')[2]}"


def _request_bytes(
    method: str, target: _Target, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method.upper()} {target.path} HTTP/1.1", f"Host: {target.host_header}"]
    given = {name.lower() for name in headers}
    defaults = {
        "user-agent": "rollout-controller",
        "accept-encoding": "identity",  # the body is read as it comes, never decompressed
        "connection": "close",
    }
    if target.authorization and "authorization" not in given:
        defaults["authorization"] = target.authorization
    lines += [f"{name}: {value}" for name, value in defaults.items() if name not in given]
    for name, value in headers.items():
        if name.lower() == "connection":
            continue  # one request per connection: always close
        if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
            raise HttpFailure(f"header {name.strip()!r} holds a line break")
        lines.append(f"{name}: {value}")
    if body is not None or method.upper() in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


# --- the connection --------------------------------------------------------------------


class _Connection:
    """A socket whose every operation gets only the time left before the deadline."""

    def __init__(self, deadline: float, timeout: float) -> None:
        self.deadline = deadline
        self.timeout_text = f"timeout after {timeout:g}s"
        self.sock: socket.socket | None = None
        self.buffer = bytearray()

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(self.timeout_text)
        return left

    def open(self, target: _Target) -> None:
        last: OSError | None = None
        for family, kind, proto, address in _resolve(target.host, target.port, self):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self.remaining())
                sock.connect(address)
            except OSError as exc:
                sock.close()
                if isinstance(exc, TimeoutError):
                    raise
                last = exc
                continue
            self.sock = sock
            break
        if self.sock is None:
            raise last or Unreachable("no address to connect to")
        if target.scheme == "https":
            context = ssl.create_default_context()
            self.sock = context.wrap_socket(
                self.sock, server_hostname=target.host, do_handshake_on_connect=False
            )
            # CPython bounds the whole handshake (every read in it) by the timeout.
            self.sock.settimeout(self.remaining())
            self.sock.do_handshake()

    def send(self, data: bytes) -> None:
        assert self.sock is not None
        # sendall's timeout covers the whole call since Python 3.5.
        self.sock.settimeout(self.remaining())
        self.sock.sendall(data)

    def fill(self) -> bool:
        """Read what the peer has sent into the buffer; False at end of stream."""
        assert self.sock is not None
        self.sock.settimeout(self.remaining())
        chunk = self.sock.recv(_RECV)
        self.buffer += chunk
        return bool(chunk)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


_Address = tuple[socket.AddressFamily, socket.SocketKind, int, Any]


def _resolve(host: str, port: int, conn: _Connection) -> list[_Address]:
    """Addresses for ``host``; name lookups get the deadline too (getaddrinfo has none)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 0, (host, port))]
    found: list[Any] = []
    lookup = threading.Thread(
        target=_lookup, args=(host, port, found), name="http-resolve", daemon=True
    )
    lookup.start()
    lookup.join(conn.remaining())
    if not found:
        raise DeadlineExceeded(conn.timeout_text)
    result = found[0]
    if isinstance(result, OSError):
        raise Unreachable(f"cannot resolve host {host!r}") from None
    return [(f, k, p, a) for f, k, p, _, a in result]


def _lookup(host: str, port: int, found: list[Any]) -> None:
    try:
        found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    except OSError as exc:
        found.append(exc)


# --- the answer ------------------------------------------------------------------------


def _read_answer(conn: _Connection, method: str, max_bytes: int) -> HttpAnswer:
    while True:
        status, headers = _read_head(conn)
        if not 100 <= status < 200:
            break  # 1xx (100 Continue, 103 Early Hints) come before the real answer
    if method.upper() == "HEAD" or status in (204, 304):
        return HttpAnswer(status, headers, b"")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _read_chunked(conn, max_bytes)
    elif "content-length" in headers:
        body = _read_length(conn, _content_length(headers["content-length"]), max_bytes)
    else:
        body = _read_to_close(conn, max_bytes)
    return HttpAnswer(status, headers, body)


def _read_head(conn: _Connection) -> tuple[int, dict[str, str]]:
    while (end := conn.buffer.find(b"\r\n\r\n")) < 0:
        if len(conn.buffer) > _HEAD_LIMIT:
            raise AnswerTooLarge(f"answer head over {_HEAD_LIMIT // 1024} KiB")
        if not conn.fill():
            if not conn.buffer:
                raise Unreachable("connection closed before an answer")
            raise BadAnswer("not an HTTP answer (closed before the end of the head)")
    if end > _HEAD_LIMIT:
        raise AnswerTooLarge(f"answer head over {_HEAD_LIMIT // 1024} KiB")
    head = bytes(conn.buffer[:end]).decode("latin-1")
    del conn.buffer[: end + 4]
    status_line, *lines = head.split("\r\n")
    return _status(status_line), _headers(lines)


def _status(line: str) -> int:
    version, _, rest = line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise BadAnswer(f"not an HTTP answer: {line[:40]!r}")
    return int(code)


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadAnswer(f"malformed header line {line[:40]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _content_length(text: str) -> int:
    # Repeated identical values ("10, 10") are allowed by RFC 9110; differing ones are not.
    values = {part.strip() for part in text.split(",")}
    if len(values) != 1 or not (value := values.pop()).isdigit():
        raise BadAnswer(f"invalid Content-Length {text[:40]!r}")
    return int(value)


def _too_large(max_bytes: int) -> AnswerTooLarge:
    return AnswerTooLarge(f"answer larger than {_size(max_bytes)}")


def _read_length(conn: _Connection, length: int, max_bytes: int) -> bytes:
    if length > max_bytes:
        raise _too_large(max_bytes)  # announced: no need to read any of it
    while len(conn.buffer) < length:
        if not conn.fill():
            raise BadAnswer(f"answer cut short ({len(conn.buffer)} of {length} bytes)")
    return bytes(conn.buffer[:length])


def _read_to_close(conn: _Connection, max_bytes: int) -> bytes:
    while len(conn.buffer) <= max_bytes:
        if not conn.fill():
            return bytes(conn.buffer)
    raise _too_large(max_bytes)


def _read_chunked(conn: _Connection, max_bytes: int) -> bytes:
    body = bytearray()
    while True:
        size = _chunk_size(_read_line(conn))
        if size == 0:
            break
        if len(body) + size > max_bytes:
            raise _too_large(max_bytes)
        while len(conn.buffer) < size + 2:
            if not conn.fill():
                raise BadAnswer("answer cut short inside a chunk")
        if conn.buffer[size : size + 2] != b"\r\n":
            raise BadAnswer("broken chunked encoding (no CRLF after a chunk)")
        body += conn.buffer[:size]
        del conn.buffer[: size + 2]
    trailers = 0
    while _read_line(conn):  # trailer fields, ignored, up to the empty line
        trailers += 1
        if trailers > 100:
            raise AnswerTooLarge("too many trailer fields")
    return bytes(body)


def _read_line(conn: _Connection) -> bytes:
    while (end := conn.buffer.find(b"\r\n")) < 0:
        if len(conn.buffer) > _LINE_LIMIT:
            raise BadAnswer("broken chunked encoding (line too long)")
        if not conn.fill():
            raise BadAnswer("answer cut short in chunked encoding")
    line = bytes(conn.buffer[:end])
    del conn.buffer[: end + 2]
    return line


def _chunk_size(line: bytes) -> int:
    text = line.split(b";", 1)[0].strip()
    try:
        size = int(text, 16)
    except ValueError:
        raise BadAnswer(f"broken chunked encoding (chunk size {text[:20]!r})") from None
    if size < 0 or text.startswith((b"-", b"+", b"0x", b"0X")):
        raise BadAnswer(f"broken chunked encoding (chunk size {text[:20]!r})")
    return size


def _size(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} KiB"
    return f"{n} bytes"


__all__ = [
    "AnswerTooLarge",
    "BadAnswer",
    "DeadlineExceeded",
    "HttpAnswer",
    "HttpFailure",
    "Unreachable",
    "basic_authorization",
    "fetch",
    "redact_url",
]
