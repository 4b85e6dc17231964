"""The SDK against a controller that misbehaves on a real loopback socket: it trickles
the snapshot one byte at a time, or answers something that is not a snapshot. Each
poll ends by the client's deadline, counts as failed (the client says ``stale``),
keeps the last good snapshot, and the client recovers when the controller behaves."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from flags.model import EvaluationContext
from flags.sdk.client import FlagClient
from tests.hostile import Connection, HostilePeer, http_response, respond, trickle
from tests.unit.fake_controller import color, snapshot_body

USER = EvaluationContext("user-1")
TIMEOUT = 1.0  # the client's deadline for a whole poll
POLL = 0.3


def snapshot_answer(revision: int, value: str) -> bytes:
    body = json.dumps(snapshot_body(revision, color(value))).encode()
    return http_response(body, headers={"ETag": f'"r{revision}"'})


class Switchable:
    """A peer behaviour a test can change while the client polls."""

    def __init__(self, behaviour: Callable[[Connection], None]) -> None:
        self.now = behaviour

    def __call__(self, conn: Connection) -> None:
        self.now(conn)


def eventually(check: Callable[[], bool], within: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            pytest.fail(f"not within {within}s")
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
def peer() -> Iterator[tuple[HostilePeer, Switchable]]:
    behaviour = Switchable(respond(snapshot_answer(1, "blue")))
    with HostilePeer(behaviour) as hostile:
        yield hostile, behaviour


@pytest.fixture
def client(peer: tuple[HostilePeer, Switchable]) -> Iterator[FlagClient]:
    hostile, _ = peer
    with FlagClient(hostile.url, "sdk-token", poll_interval=POLL, timeout=TIMEOUT) as flags:
        assert flags.wait_until_ready(10)
        assert flags.string_value("color", "default", USER) == "blue"
        yield flags


def test_a_trickling_controller_fails_the_poll_at_the_deadline_then_the_client_recovers(
    peer: tuple[HostilePeer, Switchable], client: FlagClient
) -> None:
    hostile, behaviour = peer
    # About 400 bytes at one byte every 0.2 s: each read succeeds, the whole answer
    # would take well over a minute.
    behaviour.now = trickle(snapshot_answer(2, "green"), every=0.2)
    took = eventually(lambda: client.status.stale, within=TIMEOUT + POLL + 5)
    print(f"stale {took:.2f}s after the controller began to trickle (deadline {TIMEOUT}s)")
    asked = len(hostile.requests)
    # Polls keep coming, each cut off at its deadline rather than held by the trickle.
    eventually(lambda: len(hostile.requests) >= asked + 2, within=3 * (TIMEOUT + POLL) + 5)
    assert client.status.stale
    assert client.string_value("color", "default", USER) == "blue"
    behaviour.now = respond(snapshot_answer(3, "green"))
    eventually(lambda: client.status.revision == 3, within=TIMEOUT + POLL + 5)
    assert not client.status.stale
    assert client.string_value("color", "default", USER) == "green"


DEEP = b'{"revision":2,"flags":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize(
    "body",
    [
        DEEP,
        b'{"revision":2,"flags":{"color":' + b"{" * 50_000 + b"}" * 50_000 + b"}}",
        b'{"revision":"two","flags":[]}',
        b'{"revision":2,"flags":{"color":[1,2]}, "extra":',
        b"<html>502 Bad Gateway</html>",
        b"\xff\xfe not utf-8",
        b"[]",
    ],
    ids=["nested-100k", "nested-flag", "wrong-types", "truncated", "html", "binary", "list"],
)
def test_a_malformed_snapshot_is_a_failed_poll_that_keeps_the_last_good_one(
    peer: tuple[HostilePeer, Switchable], client: FlagClient, body: bytes
) -> None:
    _, behaviour = peer
    behaviour.now = respond(http_response(body))
    eventually(lambda: client.status.consecutive_failures >= 2, within=3 * POLL + 5)
    assert client.status.stale
    assert client.status.revision == 1
    assert client.string_value("color", "default", USER) == "blue"
    behaviour.now = respond(snapshot_answer(4, "green"))
    eventually(lambda: client.status.revision == 4, within=TIMEOUT + POLL + 5)
    assert not client.status.stale
