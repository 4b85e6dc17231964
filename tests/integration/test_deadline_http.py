"""``controller.deadline_http.fetch`` against real loopback peers that misbehave.

What a caller notices: a slow, silent, huge or broken peer ends in a clear error within
the deadline and with bounded memory; a well-behaved one gives its answer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import tracemalloc

import pytest

from controller.deadline_http import (
    AnswerTooLarge,
    BadAnswer,
    DeadlineExceeded,
    HttpFailure,
    Unreachable,
    fetch,
)
from tests.hostile import (
    Connection,
    HostilePeer,
    hang,
    http_response,
    huge,
    respond,
    slam,
    trickle,
)

MIB = 1 << 20


def chunked(*parts: bytes, trailer: bytes = b"") -> bytes:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts)
    return head + body + b"0\r\n" + trailer + b"\r\n"


def stream_without_length(size: int):  # type: ignore[no-untyped-def]
    """An answer with no Content-Length: the body runs until the peer closes."""

    def behaviour(conn: Connection) -> None:
        if not conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"):
            return
        block = b"x" * 65536
        for _ in range(size // len(block)):
            if conn.stopping.is_set() or not conn.send(block):
                return

    return behaviour


def huge_chunked(size: int):  # type: ignore[no-untyped-def]
    def behaviour(conn: Connection) -> None:
        if not conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"):
            return
        block = b"%x\r\n%s\r\n" % (65536, b"y" * 65536)
        for _ in range(size // 65536):
            if conn.stopping.is_set() or not conn.send(block):
                return

    return behaviour


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- answers that work -------------------------------------------------------------------


def test_content_length_answer_with_headers_lower_case() -> None:
    answer = http_response(b'{"ok": true}', headers={"X-Thing": "a", "x-thing": "b"})
    with HostilePeer(respond(answer)) as peer:
        got = fetch("GET", peer.url + "/api?q=1", timeout=5, max_bytes=MIB)
    assert got.status == 200
    assert got.body == b'{"ok": true}'
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-thing"] == "a, b"
    assert peer.requests[0].target == "/api?q=1"


def test_chunked_answer_is_joined_and_trailers_skipped() -> None:
    with HostilePeer(respond(chunked(b"hello ", b"world", trailer=b"X-T: 1\r\n"))) as peer:
        got = fetch("GET", peer.url, timeout=5, max_bytes=MIB)
    assert got.body == b"hello world"


def test_answer_read_until_the_peer_closes() -> None:
    raw = b"HTTP/1.0 503 Service Unavailable\r\nServer: x\r\n\r\ndown for a bit"
    with HostilePeer(respond(raw)) as peer:
        got = fetch("GET", peer.url, timeout=5, max_bytes=MIB)
    assert (got.status, got.body) == (503, b"down for a bit")


def test_informational_answer_before_the_real_one_is_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\n" + http_response(b"done")
    with HostilePeer(respond(raw)) as peer:
        assert fetch("POST", peer.url, body=b"x", timeout=5, max_bytes=MIB).body == b"done"


def test_post_sends_body_headers_and_basic_auth_from_userinfo() -> None:
    with HostilePeer(respond(http_response(b"{}"))) as peer:
        url = peer.url.replace("http://", "http://al%40ice:s3cr%3At@") + "/hook"
        fetch(
            "POST",
            url,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=b"query=up",
            timeout=5,
            max_bytes=MIB,
        )
    request = peer.requests[0]
    assert (request.method, request.path, request.body) == ("POST", "/hook", b"query=up")
    assert request.params["query"] == "up"
    # base64("al@ice:s3cr:t")
    assert request.headers["authorization"] == "Basic YWxAaWNlOnMzY3I6dA=="
    assert request.headers["host"] == f"127.0.0.1:{peer.port}"


def test_an_explicit_authorization_header_wins_over_userinfo() -> None:
    with HostilePeer(respond(http_response(b"{}"))) as peer:
        url = peer.url.replace("http://", "http://u:p@")
        fetch("GET", url, headers={"Authorization": "Bearer t0k"}, timeout=5, max_bytes=MIB)
    assert peer.requests[0].headers["authorization"] == "Bearer t0k"


# --- peers that misbehave ----------------------------------------------------------------


def test_a_trickling_peer_ends_in_deadline_exceeded_at_the_timeout() -> None:
    # Every socket read succeeds (one byte every 2 s); only a whole-request deadline ends it.
    with HostilePeer(trickle(http_response(b"x" * 100), every=2.0)) as peer:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match=r"timeout after 3s"):
            fetch("GET", peer.url, timeout=3, max_bytes=MIB)
        elapsed = time.monotonic() - started
    assert 2.9 <= elapsed < 8, elapsed


def test_a_peer_that_never_answers_ends_in_deadline_exceeded() -> None:
    with HostilePeer(hang()) as peer:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            fetch("GET", peer.url, timeout=1, max_bytes=MIB)
        assert time.monotonic() - started < 6


def test_an_announced_huge_answer_is_refused_without_reading_it() -> None:
    with HostilePeer(huge(50 * MIB)) as peer:
        tracemalloc.start()
        try:
            with pytest.raises(AnswerTooLarge, match="larger than 1 MiB"):
                fetch("GET", peer.url, timeout=10, max_bytes=MIB)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 2 * MIB, peak


@pytest.mark.parametrize("behaviour", [stream_without_length, huge_chunked])
def test_an_unannounced_huge_answer_stops_at_max_bytes(behaviour) -> None:  # type: ignore[no-untyped-def]
    with HostilePeer(behaviour(50 * MIB)) as peer:
        tracemalloc.start()
        try:
            with pytest.raises(AnswerTooLarge, match="larger than 1 MiB"):
                fetch("GET", peer.url, timeout=20, max_bytes=MIB)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # The buffer holds at most max_bytes plus one read; far from the 50 MB sent.
    assert peak < 5 * MIB, peak


def test_a_head_that_never_ends_is_too_large() -> None:
    endless = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 200_000
    with HostilePeer(respond(endless)) as peer, pytest.raises(AnswerTooLarge, match="head"):
        fetch("GET", peer.url, timeout=5, max_bytes=MIB)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP answer"),
        (b"\x00\x01\x02garbage", "not an HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", "cut short"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX", "no CRLF"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "cut short"),
    ],
)
def test_garbage_is_a_bad_answer(raw: bytes, reason: str) -> None:
    with HostilePeer(respond(raw)) as peer, pytest.raises(BadAnswer, match=reason):
        fetch("GET", peer.url, timeout=5, max_bytes=MIB)


def test_a_peer_that_closes_at_once_is_unreachable() -> None:
    with HostilePeer(slam()) as peer, pytest.raises(Unreachable, match="closed before"):
        fetch("GET", peer.url, timeout=5, max_bytes=MIB)


def test_a_closed_port_is_unreachable_and_names_no_credentials() -> None:
    url = f"http://admin:hunter2@127.0.0.1:{free_port()}/"
    with pytest.raises(Unreachable, match="connection refused") as caught:
        fetch("GET", url, timeout=5, max_bytes=MIB)
    assert "hunter2" not in str(caught.value)
    assert "admin" not in str(caught.value)


def test_https_to_a_plain_http_server_fails_the_handshake() -> None:
    # A plain server that speaks first (HostilePeer waits for a request head that a TLS
    # ClientHello never completes).
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def speak_plain() -> None:
        with contextlib.suppress(OSError):
            sock, _ = listener.accept()
            with sock:
                sock.sendall(http_response(b"{}"))

    server = threading.Thread(target=speak_plain, daemon=True)
    server.start()
    try:
        url = f"https://127.0.0.1:{listener.getsockname()[1]}/"
        with pytest.raises(Unreachable, match="TLS"):
            fetch("GET", url, timeout=5, max_bytes=MIB)
    finally:
        server.join(timeout=5)
        listener.close()


def test_https_to_a_hanging_peer_meets_the_deadline_in_the_handshake() -> None:
    with HostilePeer(hang()) as peer:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            fetch("GET", peer.url.replace("http://", "https://"), timeout=1, max_bytes=MIB)
        assert time.monotonic() - started < 6


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "http:///nohost", "http://h:99999/"])
def test_unusable_urls_fail_clearly(url: str) -> None:
    with pytest.raises(HttpFailure):
        fetch("GET", url, timeout=1, max_bytes=MIB)


def test_a_hanging_call_does_not_hold_up_another_thread() -> None:
    with HostilePeer(hang()) as slow, HostilePeer(respond(http_response(b"ok"))) as fast:
        outcomes: list[HttpFailure] = []

        def wait_for_slow() -> None:
            try:
                fetch("GET", slow.url, timeout=8, max_bytes=MIB)
            except HttpFailure as exc:  # cut off when the peer stops
                outcomes.append(exc)

        stuck = threading.Thread(target=wait_for_slow, daemon=True)
        stuck.start()
        deadline = time.monotonic() + 5
        while slow.connections == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        assert fetch("GET", fast.url, timeout=5, max_bytes=MIB).body == b"ok"
        assert time.monotonic() - started < 4  # not waiting for the 8 s hang
        assert stuck.is_alive()
    stuck.join(timeout=10)
    assert len(outcomes) == 1
