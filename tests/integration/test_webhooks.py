"""Webhooks on transitions, end to end: a real ``rollout serve`` (SQLite and PostgreSQL)
posting to a real HTTP receiver in this test; and the outbox itself on both databases
(same transaction as the audit event, claims with a lease)."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import col, select

from controller.notify.config import TRANSITION_EVENTS, WebhookConfig
from controller.notify.webhooks import DeliveryWorker, Outbox
from controller.rollouts import Rollouts, parse_plan_input
from controller.storage.store import Store
from controller.storage.tables import AuditRow, WebhookOutboxRow
from stages.actions import Action
from tests.databases import fresh_database
from tests.hostile import HostilePeer, http_response, respond, trickle
from tests.serving import Server, free_port, running_server

SECRET = "webhook-signing-secret"
PUBLIC_URL = "https://rollouts.example.test"
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def ramp(name: str, *, first_hold: str = "1s", second_hold: str = "1h") -> str:
    """A timed ramp (no gates): shadow, canary 5 %, full."""
    return (
        f"rollout: {name}\nflag: {name}\ninterval: 1s\nsteps:\n"
        f"  - {{stage: shadow, hold: {first_hold}}}\n"
        f"  - {{stage: canary, percent: 5, hold: {second_hold}}}\n"
        "  - {stage: full}\n"
    )


# -- a real receiver ----------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    def about(self, rollout: str) -> bool:
        data = self.json
        return data.get("rollout") == rollout or f"*{rollout}*" in data.get("text", "")


class Receiver:
    """A ThreadingHTTPServer on a fixed port that can go down and come back. Each path
    answers the statuses queued for it, then 200."""

    def __init__(self) -> None:
        self.port = free_port()
        self.answers: dict[str, deque[int]] = {}
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.strip("/")
                with receiver._lock:
                    queued = receiver.answers.get(path)
                    status = queued.popleft() if queued else 200
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver._received.append(Received(path, headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None and self._thread is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = self._thread = None

    def received(self, path: str, rollout: str, *, acknowledged: bool = False) -> list[Received]:
        with self._lock:
            return [
                r
                for r in self._received
                if r.path == path and r.about(rollout) and (r.status == 200 or not acknowledged)
            ]


def eventually(check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy (bounded: an eventual effect)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or check}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"webhooks-{request.param}")
    hooks = [
        {"name": "chat", "url": receiver.url("chat"), "format": "slack"},
        {"name": "ops", "url": receiver.url("ops"), "format": "json", "secret": SECRET},
        {
            "name": "rollbacks",
            "url": receiver.url("rollbacks"),
            "format": "json",
            "events": ["rollback", "abort"],
        },
    ]
    env = {
        "ROLLOUT_WEBHOOKS": json.dumps(hooks),
        "ROLLOUT_WEBHOOK_POLL": "0.2",
        "ROLLOUT_SCHEDULER": "true",
        "ROLLOUT_SCHEDULER_TICK": "0.2",
        "ROLLOUT_PUBLIC_URL": PUBLIC_URL,
        "ROLLOUT_LOG_LEVEL": "info",
    }
    with (
        fresh_database(request.param, workdir) as url,
        running_server(workdir, database_url=url, extra_env=env) as s,
    ):
        yield s


def start_ramp(server: Server, name: str, **kwargs: str) -> None:
    with server.client() as c:
        assert c.post("/api/v1/plans", json={"yaml": ramp(name, **kwargs)}).status_code == 201
        assert c.post(f"/api/v1/rollouts/{name}/actions/start", json={}).status_code == 200


def rollout(server: Server, name: str) -> dict[str, Any]:
    with server.client() as c:
        data: dict[str, Any] = c.get(f"/api/v1/rollouts/{name}").json()
        return data


def deliveries(server: Server, **params: str) -> list[dict[str, Any]]:
    with server.client() as c:
        r = c.get("/api/v1/webhooks/deliveries", params={"limit": "1000", **params})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["deliveries"]
    return found


def webhook_samples(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with server.client() as c:
        text = c.get("/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("rollout_webhook_")
    }


def by_event(received: list[Received]) -> dict[str, dict[str, Any]]:
    return {r.json["event"]: r.json for r in received}


# -- through a real server ------------------------------------------------------------------


def test_manual_and_automatic_transitions_are_delivered_in_both_formats_and_signed(
    server: Server, receiver: Receiver
) -> None:
    name = f"wh-flow-{server.database_url[:6]}"
    start_ramp(server, name)
    eventually(lambda: rollout(server, name)["step"] == 1, what="the automatic advance")
    with server.client() as c:
        r = c.post(f"/api/v1/rollouts/{name}/actions/pause", json={"reason": "looks odd"})
        assert r.status_code == 200, r.text
        r = c.post(f"/api/v1/rollouts/{name}/actions/rollback", json={"immediate": True})
        assert r.status_code == 200, r.text

    ops = eventually(lambda: (got := receiver.received("ops", name)) and len(got) >= 4 and got)
    assert [r.json["event"] for r in ops] == ["start", "advance", "pause", "rollback"]
    events = by_event(ops)
    advance = events["advance"]
    assert advance["actor"] == "controller"
    assert advance["from"] == {"status": "running", "step": 0, "stage": "shadow"}
    assert advance["to"] == {"status": "running", "step": 1, "stage": "canary 5%"}
    assert advance["serving"]["percent"] == 5 and advance["serving"]["step"] == 1
    assert advance["reason"].startswith("dwell 1s done, timed ramp")
    assert advance["url"] == f"{PUBLIC_URL}/ui/rollouts/{name}"
    pause = events["pause"]
    assert pause["reason"] == "looks odd" and pause["actor"].endswith("(admin)")
    assert pause["from"]["status"] == "running" and pause["to"]["status"] == "paused"
    assert events["rollback"]["to"]["status"] == "rolled_back"

    for r in ops:
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-rollout-event"] == r.json["event"]
        assert r.headers["idempotency-key"] == r.headers["x-rollout-delivery"]
        uuid.UUID(r.headers["x-rollout-delivery"])
        expected = hmac.new(SECRET.encode(), r.body, hashlib.sha256).hexdigest()
        assert r.headers["x-rollout-signature"] == f"sha256={expected}"
    assert len({r.headers["x-rollout-delivery"] for r in ops}) == 4

    chat = eventually(lambda: (got := receiver.received("chat", name)) and len(got) >= 4 and got)
    texts = [r.json["text"] for r in chat]
    assert texts[0].startswith(f":rocket: *{name}* started")
    assert texts[1].startswith(f":arrow_forward: *{name}* advanced at shadow: dwell 1s done")
    assert texts[2] == f":double_vertical_bar: *{name}* paused at canary 5%: looks odd"
    assert texts[3].startswith(f":rotating_light: *{name}* rolled back at canary 5%")
    assert all("x-rollout-signature" not in r.headers for r in chat)  # no secret, no signature
    assert all(r.json["blocks"][0]["text"]["text"] == r.json["text"] for r in chat)

    # Only what it subscribed to.
    (rollback,) = eventually(lambda: receiver.received("rollbacks", name))
    assert rollback.json["event"] == "rollback"

    # One notification per webhook for each transition in the audit log, and no other.
    with server.client() as c:
        audit = c.get("/api/v1/audit", params={"rollout": name}).json()["events"]
    transitions = {e["id"] for e in audit if e["action"] in TRANSITION_EVENTS}
    assert len(transitions) == 4 and len(audit) == 6  # and flag.create, apply
    assert {r.json["audit_id"] for r in ops} == transitions
    time.sleep(0.5)  # nothing more arrives: each was acknowledged once
    assert len(receiver.received("ops", name)) == 4


def test_a_failed_delivery_is_retried_with_the_same_id_until_acknowledged(
    server: Server, receiver: Receiver
) -> None:
    name = f"wh-retry-{server.database_url[:6]}"
    receiver.answers["ops"] = deque([500, 503])
    start_ramp(server, name, first_hold="1h")  # one event only: it gets both failures
    tries = eventually(lambda: (got := receiver.received("ops", name)) and len(got) >= 3 and got)
    assert [r.status for r in tries] == [500, 503, 200]
    assert len({r.headers["x-rollout-delivery"] for r in tries}) == 1
    assert len({r.body for r in tries}) == 1

    (row,) = [d for d in deliveries(server, webhook="ops") if d["rollout"] == name]
    assert row["status"] == "delivered" and row["attempts"] == 3
    assert row["last_error"] == "HTTP 503: ok"  # why the try before the last failed
    samples = webhook_samples(server)
    retries = (
        "rollout_webhook_deliveries_total",
        frozenset({("webhook", "ops"), ("result", "retry")}),
    )
    assert samples[retries] >= 2


def test_receiver_down_grows_the_backlog_without_blocking_decisions_then_drains(
    server: Server, receiver: Receiver
) -> None:
    name = f"wh-down-{server.database_url[:6]}"
    receiver.stop()
    try:
        start_ramp(server, name, second_hold="1s")
        # Decisions go on: the ramp completes with nobody to tell.
        eventually(lambda: rollout(server, name)["status"] == "completed", what="completion")
        pending = [d for d in deliveries(server, status="pending") if d["rollout"] == name]
        assert {d["webhook"] for d in pending} == {"chat", "ops"}
        assert {d["event"] for d in pending} == {"start", "advance", "complete"}
        samples = webhook_samples(server)
        backlog = samples[("rollout_webhook_backlog", frozenset({("webhook", "ops")}))]
        assert backlog >= 4  # start, advance twice, complete
        age = ("rollout_webhook_oldest_pending_seconds", frozenset({("webhook", "ops")}))
        assert samples[age] > 0
        assert not any(d["last_error"] is None for d in pending if d["attempts"])
        log = server.log.read_text()
        assert "webhook ops: delivery" in log  # failures are logged by webhook name ...
        assert f":{receiver.port}" not in log  # ... and never with the URL
    finally:
        receiver.start()

    def drained() -> bool:
        samples = webhook_samples(server)
        return all(
            samples[("rollout_webhook_backlog", frozenset({("webhook", hook)}))] == 0
            for hook in ("chat", "ops")
        )

    eventually(drained, timeout=60, what="the backlog to drain")
    ops = receiver.received("ops", name, acknowledged=True)
    assert sorted(r.json["event"] for r in ops) == ["advance", "advance", "complete", "start"]
    samples = webhook_samples(server)
    assert samples[("rollout_webhook_oldest_pending_seconds", frozenset({("webhook", "ops")}))] == 0


def test_a_refused_delivery_is_dead_at_once_until_an_admin_retries_it(
    server: Server, receiver: Receiver, tmp_path: Path
) -> None:
    name = f"wh-dead-{server.database_url[:6]}"
    receiver.answers["chat"] = deque([404])
    start_ramp(server, name, first_hold="1h")
    dead = eventually(
        lambda: [d for d in deliveries(server, status="dead") if d["rollout"] == name]
    )
    (row,) = dead
    assert row["webhook"] == "chat" and row["attempts"] == 1 and row["last_error"] == "HTTP 404: ok"
    assert len(receiver.received("chat", name)) == 1

    viewer = server.token("viewer", "webhook-viewer")
    with server.client(token=viewer) as c:
        assert c.get("/api/v1/webhooks/deliveries", params={"status": "dead"}).status_code == 200
        refused = c.post(f"/api/v1/webhooks/deliveries/{row['id']}/retry")
        assert refused.status_code == 403
        bad = c.get("/api/v1/webhooks/deliveries", params={"status": "lost"})
        assert bad.status_code == 422 and bad.json()["problems"][0]["field"] == "query.status"
    with server.client(token=None) as c:
        assert c.get("/api/v1/webhooks/deliveries").status_code == 401
    with server.client() as c:
        assert c.post("/api/v1/webhooks/deliveries/999999/retry").status_code == 404

    cli = [sys.executable, "-m", "controller", "webhooks"]
    env = server.cli_env()
    listed = subprocess.run(
        [*cli, "list", "--status", "dead"], env=env, capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    assert f"{row['id']} " in listed.stdout and "HTTP 404: ok" in listed.stdout
    retried = subprocess.run(
        [*cli, "retry", str(row["id"])], env=env, capture_output=True, text=True, timeout=30
    )
    assert retried.returncode == 0, retried.stderr
    assert f"webhook delivery {row['id']} (chat) will be sent again" in retried.stdout
    eventually(lambda: receiver.received("chat", name, acknowledged=True), what="redelivery")
    again = subprocess.run(
        [*cli, "retry", str(row["id"])], env=env, capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 1 and "already delivered" in again.stderr


# -- the outbox on both databases -------------------------------------------------------------

HOOKS = [
    WebhookConfig(name="ops", url="http://127.0.0.1:9/ops"),  # type: ignore[arg-type]
    WebhookConfig(name="alarm", url="http://127.0.0.1:9/alarm", events=["rollback"]),  # type: ignore[arg-type]
]


def outbox_rows(store: Store) -> list[WebhookOutboxRow]:
    with store.read() as session:
        return list(session.execute(select(WebhookOutboxRow)).scalars())


def audit_ids(store: Store) -> set[int]:
    with store.read() as session:
        ids = session.execute(
            select(col(AuditRow.id)).where(col(AuditRow.action).in_(TRANSITION_EVENTS))
        ).scalars()
        return {i for i in ids if i is not None}


def rollouts_with_outbox(store: Store) -> tuple[Rollouts, Outbox]:
    outbox = Outbox(store, HOOKS, public_url=None, max_attempts=3)
    rollouts = Rollouts(store, lambda: None)
    rollouts.notify = outbox.enqueue
    plan, source = parse_plan_input(ramp("consistent"), None)
    rollouts.apply(plan, source, "test", T0)
    return rollouts, outbox


def test_an_outbox_row_commits_with_its_audit_event_and_rolls_back_with_it(
    store: Store,
) -> None:
    rollouts, outbox = rollouts_with_outbox(store)
    rollouts.act("consistent", Action.START, actor="test", now=T0)
    (row,) = outbox_rows(store)
    assert row.webhook == "ops" and row.event == "start" and row.status == "pending"
    assert {row.audit_id} == audit_ids(store)

    def enqueue_then_crash(*args: Any) -> None:
        outbox.enqueue(*args)
        raise RuntimeError("crash after the outbox insert, before commit")

    rollouts.notify = enqueue_then_crash
    with pytest.raises(RuntimeError):
        rollouts.act("consistent", Action.PAUSE, actor="test", now=T0 + timedelta(seconds=1))
    assert len(outbox_rows(store)) == 1 and len(audit_ids(store)) == 1
    assert rollouts.get("consistent", T0)["status"] == "running"

    rollouts.notify = outbox.enqueue
    rollouts.act(
        "consistent", Action.ROLLBACK, actor="test", now=T0 + timedelta(seconds=2), immediate=True
    )
    rows = outbox_rows(store)
    assert sorted((r.webhook, r.event) for r in rows) == [
        ("alarm", "rollback"),
        ("ops", "rollback"),
        ("ops", "start"),
    ]
    assert {r.audit_id for r in rows} == audit_ids(store)


def test_two_replicas_claim_disjoint_rows_and_a_lapsed_lease_is_claimed_again(
    store: Store,
) -> None:
    rollouts, outbox = rollouts_with_outbox(store)
    rollouts.act("consistent", Action.START, actor="test", now=T0)
    for i in range(9):
        rollouts.act("consistent", Action.PAUSE, actor="test", now=T0 + timedelta(seconds=2 * i))
        rollouts.act(
            "consistent", Action.RESUME, actor="test", now=T0 + timedelta(seconds=2 * i + 1)
        )
    assert len(outbox_rows(store)) == 19
    now = T0 + timedelta(minutes=1)
    claims: dict[str, list[int]] = {}
    barrier = threading.Barrier(2)

    def claim(holder: str) -> None:
        barrier.wait()
        batch = outbox.claim(holder, now, ["ops"], limit=10, lease=timedelta(seconds=30))
        claims[holder] = [c.id for c in batch]

    threads = [threading.Thread(target=claim, args=(h,)) for h in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not set(claims["a"]) & set(claims["b"])
    assert len(claims["a"]) + len(claims["b"]) == 19
    # While the leases hold nobody else gets them; once they lapse, another replica does.
    assert (
        outbox.claim(
            "c", now + timedelta(seconds=29), ["ops"], limit=50, lease=timedelta(seconds=30)
        )
        == []
    )
    later = outbox.claim(
        "c", now + timedelta(seconds=31), ["ops"], limit=50, lease=timedelta(seconds=30)
    )
    assert len(later) == 19


def test_a_worker_gives_up_after_max_attempts_and_the_row_says_why(store: Store) -> None:
    rollouts, outbox = rollouts_with_outbox(store)
    rollouts.act("consistent", Action.START, actor="test", now=T0)
    clock = [T0]
    # Port 9 (discard) is closed here: every attempt fails to connect.
    worker = DeliveryWorker(outbox, "w", lambda: clock[0], timeout_seconds=2, rand=lambda: 0.0)
    try:
        waits = []
        for _ in range(3):
            assert worker.run_once() == 1
            assert worker.run_once() == 0  # not due again until its backoff has passed
            (row,) = outbox_rows(store)
            waits.append(row.next_attempt_at - clock[0])
            clock[0] = row.next_attempt_at
    finally:
        worker.stop()
    (row,) = outbox_rows(store)
    assert row.status == "dead" and row.attempts == 3
    assert row.last_error is not None and row.last_error.startswith("gave up after 3 attempts")
    assert "Unreachable" in row.last_error and "127.0.0.1:9" not in row.last_error
    assert [round(w.total_seconds()) for w in waits[:2]] == [1, 2]
    assert worker.counts()[("ops", "retry")] == 2 and worker.counts()[("ops", "dead")] == 1
    assert outbox.backlog(clock[0])["ops"] == (0, 1, 0.0)


def test_delivered_rows_are_forgotten_after_the_retention_pending_and_dead_ones_stay(
    store: Store,
) -> None:
    rollouts, outbox = rollouts_with_outbox(store)
    for i, action in enumerate((Action.START, Action.PAUSE, Action.RESUME, Action.PAUSE)):
        rollouts.act("consistent", action, actor="test", now=T0 + timedelta(seconds=i))
    # The fourth row stays pending.
    early, late, gone = outbox.claim(
        "w", T0 + timedelta(seconds=5), ["ops"], limit=3, lease=timedelta(seconds=30)
    )
    outbox.settle(early, "w", T0, "delivered")
    outbox.settle(late, "w", T0 + timedelta(minutes=30), "delivered")
    outbox.settle(gone, "w", T0, "dead", error="410 Gone")

    assert outbox.prune(T0 + timedelta(seconds=1)) == 1
    assert early.id not in {r.id for r in outbox_rows(store)}
    assert outbox.prune(T0 + timedelta(days=365)) == 1
    assert sorted(r.status for r in outbox_rows(store)) == ["dead", "pending"]
    assert len(audit_ids(store)) == 4  # the audit log keeps every event


def test_the_worker_prunes_at_most_once_an_hour(store: Store) -> None:
    rollouts, outbox = rollouts_with_outbox(store)
    rollouts.act("consistent", Action.START, actor="test", now=T0)
    rollouts.act("consistent", Action.PAUSE, actor="test", now=T0 + timedelta(seconds=1))
    early, late = outbox.claim(
        "w", T0 + timedelta(seconds=2), ["ops"], limit=2, lease=timedelta(seconds=30)
    )
    outbox.settle(early, "w", T0, "delivered")
    outbox.settle(late, "w", T0 + timedelta(minutes=30), "delivered")
    start = T0 + timedelta(days=7, seconds=1)
    clock = [start]
    worker = DeliveryWorker(outbox, "w", lambda: clock[0], retention=timedelta(days=7))
    try:
        worker.run_once()
        assert [r.id for r in outbox_rows(store)] == [late.id]
        clock[0] = start + timedelta(minutes=45)  # `late` is past the retention now
        worker.run_once()
        assert [r.id for r in outbox_rows(store)] == [late.id]
        clock[0] = start + timedelta(minutes=61)
        worker.run_once()
        assert outbox_rows(store) == []
    finally:
        worker.stop()


# -- a slow receiver beside a healthy one ---------------------------------------------------


def test_a_trickling_receiver_is_cut_off_at_its_deadline_and_never_delays_another(
    store: Store,
) -> None:
    deadline = 6.0
    # The slow one first in the configuration and in every batch, so a worker that
    # delivered one after another would make the healthy receiver wait behind it.
    with (
        HostilePeer(trickle(http_response(b"ok"), every=0.5)) as slow,
        HostilePeer(respond(http_response(b"ok"))) as healthy,
    ):
        hooks = [
            WebhookConfig(name="slow", url=slow.url, format="json"),  # type: ignore[arg-type]
            WebhookConfig(name="healthy", url=healthy.url, format="json"),  # type: ignore[arg-type]
        ]
        outbox = Outbox(store, hooks, public_url=None, max_attempts=5)
        rollouts = Rollouts(store, lambda: None)
        rollouts.notify = outbox.enqueue
        plan, source = parse_plan_input(ramp("two-receivers"), None)
        now = datetime.now(UTC)
        rollouts.apply(plan, source, "test", now)
        rollouts.act("two-receivers", Action.START, actor="test", now=now)
        rollouts.act("two-receivers", Action.PAUSE, actor="test", now=now)
        worker = DeliveryWorker(
            outbox,
            "w",
            lambda: datetime.now(UTC),
            poll_seconds=0.1,
            timeout_seconds=deadline,
            rand=lambda: 0.0,
        )
        worker.start()
        try:

            def rows(hook: str) -> list[WebhookOutboxRow]:
                return [r for r in outbox_rows(store) if r.webhook == hook]

            # The healthy receiver has both deliveries while the slow one still holds
            # its first request open, no attempt of it settled yet.
            eventually(lambda: all(r.status == "delivered" for r in rows("healthy")), 15)
            assert [r.attempts for r in rows("slow")] == [0, 0]
            assert len(slow.requests) == 1
            assert len(healthy.requests) == 2
            # The slow one's attempt ends at its deadline as a failure, retried later.
            eventually(lambda: any(r.attempts >= 1 for r in rows("slow")), 2 * deadline + 10)
            failed = next(r for r in rows("slow") if r.attempts >= 1)
            assert failed.status == "pending"
            assert failed.last_error is not None and "DeadlineExceeded" in failed.last_error
            assert slow.url.split("//")[1] not in failed.last_error
            eventually(lambda: len(slow.requests) >= 3, 3 * deadline + 15)  # retried
        finally:
            worker.stop()
