"""Webhooks on rollout transitions, from a durable outbox.

A transition and its notifications commit together: ``Outbox.enqueue`` inserts one
``webhook_outbox`` row per interested webhook inside the transition's transaction and
never touches the network, so a decision is never blocked by a receiver. A
``DeliveryWorker`` thread in each process claims due rows with a lease
(``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL; ``BEGIN IMMEDIATE`` serializes
claims on SQLite), POSTs them, and marks each delivered, due again after a backoff, or
dead. Delivery is at least once: a receiver dedupes on ``X-Rollout-Delivery``.

A webhook's URL is a secret (Slack's are): logs and stored errors name the webhook."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import delete, func, or_, update
from sqlalchemy.orm import Session
from sqlmodel import col, select

from controller.deadline_http import HttpAnswer, HttpFailure, fetch
from controller.errors import Conflict, NotFound
from controller.notify import payloads
from controller.notify.config import WebhookConfig
from controller.storage.store import Store
from controller.storage.tables import AuditRow, WebhookOutboxRow
from stages.state import ACTIVE_STATUSES, RolloutState, Status, serving

log = logging.getLogger(__name__)

DeliveryStatus = Literal["pending", "delivered", "dead"]
RESULTS = ("delivered", "retry", "dead")
BATCH = 10
TIMEOUT_SECONDS = 5.0  # one deadline on each whole POST: connect, send, the answer
MAX_ANSWER_BYTES = 1024 * 1024  # a receiver's answer is read for its status and a line of text
DEFAULT_RETENTION = timedelta(days=7)  # delivered rows; ROLLOUT_WEBHOOK_RETENTION
PRUNE_EVERY = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    delivery_id: str
    webhook: str
    event: str
    payload: dict[str, Any]
    attempts: int


class Outbox:
    """The ``webhook_outbox`` table: what to send, what was sent, what gave up."""

    def __init__(
        self,
        store: Store,
        webhooks: Sequence[WebhookConfig],
        *,
        public_url: str | None,
        max_attempts: int,
    ) -> None:
        self._store = store
        self.webhooks = {w.name: w for w in webhooks}
        self._public_url = public_url
        self.max_attempts = max_attempts

    # -- inside a transition's transaction -------------------------------------------

    def enqueue(
        self, session: Session, event: AuditRow, before: RolloutState, after: RolloutState
    ) -> None:
        """One row per webhook that wants this event; the caller's transaction commits
        them with the audit event or rolls both back. No network here."""
        interested = [w for w in self.webhooks.values() if w.wants(event.action)]
        if not interested:
            return
        transition = transition_event(event, before, after)
        for hook in interested:
            build = payloads.slack_payload if hook.format == "slack" else payloads.json_payload
            session.add(
                WebhookOutboxRow(
                    delivery_id=str(uuid.uuid4()),
                    created_at=event.at,
                    webhook=hook.name,
                    audit_id=event.id,
                    event=event.action,
                    rollout=event.rollout,
                    payload=build(transition, self._public_url),
                    status="pending",
                    attempts=0,
                    next_attempt_at=event.at,
                )
            )

    def enqueue_notice(self, session: Session, event: AuditRow, freeze: dict[str, Any]) -> None:
        """A freeze event's rows, like ``enqueue``: in the freeze's own transaction."""
        interested = [w for w in self.webhooks.values() if w.wants(event.action)]
        if not interested:
            return
        details = event.details if isinstance(event.details, dict) else {}
        notice = payloads.FreezeNotice(
            audit_id=event.id or 0,
            action=event.action,
            actor=event.actor,
            at=event.at,
            reason=event.reason,
            freeze=freeze,
            rollouts=list(details.get("rollouts", freeze.get("rollouts", []))),
        )
        for hook in interested:
            build = (
                payloads.freeze_slack_payload
                if hook.format == "slack"
                else payloads.freeze_json_payload
            )
            session.add(
                WebhookOutboxRow(
                    delivery_id=str(uuid.uuid4()),
                    created_at=event.at,
                    webhook=hook.name,
                    audit_id=event.id,
                    event=event.action,
                    rollout=None,
                    payload=build(notice, self._public_url),
                    status="pending",
                    attempts=0,
                    next_attempt_at=event.at,
                )
            )

    # -- the worker's side -------------------------------------------------------------

    def any_due(self, now: datetime, names: Iterable[str]) -> bool:
        """A cheap read first, so an idle worker never takes SQLite's write lock."""
        with self._store.read() as session:
            due = _due(now, names).with_only_columns(col(WebhookOutboxRow.id)).limit(1)
            return session.execute(due).first() is not None

    def claim(
        self, holder: str, now: datetime, names: Iterable[str], *, limit: int, lease: timedelta
    ) -> list[Claimed]:
        with self._store.write() as session:
            rows = session.execute(
                _due(now, names)
                .order_by(col(WebhookOutboxRow.id))
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).scalars()
            claimed = []
            for row in rows:
                row.claimed_by = holder
                row.claimed_until = now + lease
                claimed.append(
                    Claimed(
                        id=row.id or 0,
                        delivery_id=row.delivery_id,
                        webhook=row.webhook,
                        event=row.event,
                        payload=row.payload,
                        attempts=row.attempts,
                    )
                )
            return claimed

    def settle(
        self,
        claimed: Claimed,
        holder: str,
        now: datetime,
        result: payloads.Verdict,
        *,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> payloads.Verdict:
        """Record one attempt. A retry past ``max_attempts`` is dead instead."""
        attempts = claimed.attempts + 1
        if result == "retry" and attempts >= self.max_attempts:
            result = "dead"
            error = f"gave up after {attempts} attempts: {error}"
        values: dict[str, Any] = {
            "attempts": attempts,
            "claimed_by": None,
            "claimed_until": None,
            "last_error": error,
        }
        if result == "delivered":
            values.update(status="delivered", delivered_at=now)
            del values["last_error"]  # keep why earlier attempts failed, if they did
        elif result == "dead":
            values.update(status="dead")
        else:
            values.update(next_attempt_at=retry_at or now)
        with self._store.write() as session:
            done = session.execute(
                update(WebhookOutboxRow)
                .where(
                    col(WebhookOutboxRow.id) == claimed.id,
                    col(WebhookOutboxRow.claimed_by) == holder,
                    col(WebhookOutboxRow.status) == "pending",
                )
                .values(**values)
            )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            # The lease ran out and another replica took the row: it sends it again
            # (at least once), and its result is the one that counts.
            log.warning("webhook %s: delivery %s was reclaimed", claimed.webhook, claimed.id)
        return result

    # -- people's side -----------------------------------------------------------------

    def list(
        self, *, status: DeliveryStatus | None, webhook: str | None, limit: int
    ) -> list[dict[str, Any]]:
        query = select(WebhookOutboxRow)
        if status is not None:
            query = query.where(col(WebhookOutboxRow.status) == status)
        if webhook is not None:
            query = query.where(col(WebhookOutboxRow.webhook) == webhook)
        query = query.order_by(col(WebhookOutboxRow.id).desc()).limit(limit)
        with self._store.read() as session:
            return [delivery_view(r) for r in session.execute(query).scalars()]

    def retry(self, delivery: int, now: datetime) -> dict[str, Any]:
        """A dead (or waiting) delivery is due now, with a fresh count of attempts."""
        with self._store.write() as session:
            row = session.get(WebhookOutboxRow, delivery)
            if row is None:
                raise NotFound(f"webhook delivery {delivery} not found")
            if row.status == "delivered":
                raise Conflict(f"webhook delivery {delivery} was already delivered")
            row.status = "pending"
            row.attempts = 0
            # A claim is left alone: a send in flight keeps its lease, so no other
            # replica sends the same row at the same time.
            row.next_attempt_at = now
            session.flush()
            return delivery_view(row)

    def prune(self, delivered_before: datetime) -> int:
        """Forget deliveries that succeeded before ``delivered_before``; pending and dead
        rows stay (a dead one waits for a person). The audit log keeps the events."""
        with self._store.write() as session:
            done = session.execute(
                delete(WebhookOutboxRow).where(
                    col(WebhookOutboxRow.status) == "delivered",
                    col(WebhookOutboxRow.delivered_at) < delivered_before,
                )
            )
        return int(done.rowcount)  # type: ignore[attr-defined]

    def backlog(self, now: datetime) -> dict[str, tuple[int, int, float]]:
        """Per webhook: pending rows, dead rows, age in seconds of the oldest pending."""
        stats: dict[str, tuple[int, int, float]] = dict.fromkeys(self.webhooks, (0, 0, 0.0))
        query = select(
            col(WebhookOutboxRow.webhook),
            col(WebhookOutboxRow.status),
            func.count(),
            func.min(col(WebhookOutboxRow.created_at)),
        ).group_by(col(WebhookOutboxRow.webhook), col(WebhookOutboxRow.status))
        with self._store.read() as session:
            for webhook, status, count, oldest in session.execute(
                # IN rather than != "delivered": the (status, ...) index skips the
                # delivered rows, which pile up.
                query.where(col(WebhookOutboxRow.status).in_(["pending", "dead"]))
            ):
                pending, dead, age = stats.get(webhook, (0, 0, 0.0))
                if status == "pending":
                    pending = count
                    age = max(0.0, (now - _aware(oldest)).total_seconds())
                else:
                    dead = count
                stats[webhook] = (pending, dead, age)
        return stats


def _due(now: datetime, names: Iterable[str]) -> Any:
    return select(WebhookOutboxRow).where(
        col(WebhookOutboxRow.status) == "pending",
        col(WebhookOutboxRow.next_attempt_at) <= now,
        col(WebhookOutboxRow.webhook).in_(sorted(names)),
        or_(
            col(WebhookOutboxRow.claimed_until).is_(None),
            col(WebhookOutboxRow.claimed_until) < now,
        ),
    )


def _aware(value: Any) -> datetime:
    # min() over the column bypasses its type on SQLite: a naive UTC text comes back.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def transition_event(
    event: AuditRow, before: RolloutState, after: RolloutState
) -> payloads.TransitionEvent:
    served = serving(after)
    # What the transaction recorded as served wins: it knows the kill switch (0 %).
    recorded = event.details.get("serving_after") if isinstance(event.details, dict) else None
    return payloads.TransitionEvent(
        audit_id=event.id or 0,
        action=event.action,
        actor=event.actor,
        at=event.at,
        rollout=event.rollout or after.plan.rollout,
        flag=event.flag or after.plan.flag,
        reason=event.reason,
        before=_position(before),
        after=_position(after),
        serving={
            "stage": served.stage.value,
            "step": served.step,
            "percent": served.percent,
            "regions": sorted(served.regions),
            "shadow": served.shadow,
            **(recorded if isinstance(recorded, dict) else {}),
        },
    )


def _position(state: RolloutState) -> payloads.Position:
    shows_step = state.status in ACTIVE_STATUSES or state.status is Status.COMPLETED
    label = state.plan.steps[state.step].label() if shows_step else None
    return payloads.Position(state.status.value, state.step, label)


def delivery_view(row: WebhookOutboxRow) -> dict[str, Any]:
    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at is not None else None

    return {
        "id": row.id,
        "delivery_id": row.delivery_id,
        "webhook": row.webhook,
        "event": row.event,
        "rollout": row.rollout,
        "audit_id": row.audit_id,
        "status": row.status,
        "attempts": row.attempts,
        "created_at": iso(row.created_at),
        "next_attempt_at": iso(row.next_attempt_at) if row.status == "pending" else None,
        "delivered_at": iso(row.delivered_at),
        "last_error": row.last_error,
        "claimed_by": row.claimed_by,
        "payload": row.payload,
    }


class DeliveryWorker:
    """One thread per webhook: claim that webhook's due rows, POST them, settle them.

    Receivers are independent: a receiver that is slow, trickles or hangs holds only
    its own thread (each POST has one deadline on the whole request,
    ``timeout_seconds``), so the others' deliveries go out on time. Threads are one per
    configured webhook: bounded by the configuration. Never raises out of a loop; a
    database or receiver failure waits for the next poll."""

    def __init__(
        self,
        outbox: Outbox,
        holder: str,
        clock: Callable[[], datetime],
        *,
        poll_seconds: float = 1.0,
        timeout_seconds: float = TIMEOUT_SECONDS,
        retention: timedelta = DEFAULT_RETENTION,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._outbox = outbox
        self._retention = retention
        self._pruned_at: datetime | None = None
        self._prune_lock = threading.Lock()
        self._holder = holder
        self._clock = clock
        self._poll = poll_seconds
        self._timeout = timeout_seconds
        self._rand = rand
        # Every row of a batch may take the full timeout; the lease outlasts that.
        self._lease = timedelta(seconds=BATCH * (timeout_seconds + 1) + 10)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counts_lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {
            (name, result): 0 for name in outbox.webhooks for result in RESULTS
        }
        self._redactor = UrlRedactor(outbox.webhooks.values())

    def counts(self) -> dict[tuple[str, str], int]:
        with self._counts_lock:
            return dict(self._counts)

    def start(self) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._loop, args=(name,), name=f"webhook-{name}", daemon=True)
            for name in self._outbox.webhooks
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the threads; a POST in flight ends by its deadline. Waits ``timeout``
        seconds in all at most (a POST past it is left to its daemon thread)."""
        self._stop.set()
        end = time.monotonic() + (self._timeout + 5 if timeout is None else timeout)
        for thread in self._threads:
            thread.join(timeout=max(0.0, end - time.monotonic()))
        self._threads = []

    def _loop(self, name: str) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                self._prune_now_and_then(self._clock())
                self.run_for(name)
            except Exception as exc:
                # Once per outage, not once per poll: a database down for an hour would
                # otherwise bury the log in identical stack traces.
                if not failing:
                    log.warning(
                        "webhook %s: delivery passes fail (%s); retrying quietly",
                        name,
                        type(exc).__name__,
                    )
                    failing = True
            else:
                if failing:
                    log.warning("webhook %s: delivery passes work again", name)
                    failing = False
            self._stop.wait(self._poll)

    def run_once(self) -> int:
        """Deliver what is due now to every webhook, each on its own thread, and wait
        for all of them; returns how many attempts were made."""
        self._prune_now_and_then(self._clock())
        made: list[int] = []
        failures: list[BaseException] = []

        def one(name: str) -> None:
            try:
                made.append(self.run_for(name))
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=one, args=(n,)) for n in self._outbox.webhooks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        return sum(made)

    def run_for(self, name: str) -> int:
        """Deliver what is due now to one webhook, in order; the number of attempts."""
        now = self._clock()
        if not self._outbox.any_due(now, [name]):
            return 0
        batch = self._outbox.claim(self._holder, now, [name], limit=BATCH, lease=self._lease)
        for claimed in batch:
            if self._stop.is_set():
                break  # the lease runs out and another pass (or replica) sends it
            self._deliver(claimed)
        return len(batch)

    def _prune_now_and_then(self, now: datetime) -> None:
        # Every replica prunes; deleting rows another replica just deleted is harmless.
        with self._prune_lock:
            if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
                return
            self._pruned_at = now
        pruned = self._outbox.prune(now - self._retention)
        if pruned:
            log.info("forgot %d webhook deliveries older than %s", pruned, self._retention)

    def _deliver(self, claimed: Claimed) -> None:
        hook = self._outbox.webhooks[claimed.webhook]
        body = payloads.body_bytes(claimed.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "rollout-controller",
            "X-Rollout-Event": claimed.event,
            "X-Rollout-Delivery": claimed.delivery_id,
            "Idempotency-Key": claimed.delivery_id,
        }
        if hook.secret is not None:
            headers["X-Rollout-Signature"] = payloads.signature(
                hook.secret.get_secret_value(), body
            )
        retry_after: float | None = None
        error: str | None
        try:
            # Redirects are not followed: the signed body would go to another host.
            answer = fetch(
                "POST",
                str(hook.url),
                headers=headers,
                body=body,
                timeout=self._timeout,
                max_bytes=MAX_ANSWER_BYTES,
            )
        except HttpFailure as exc:
            result: payloads.Verdict = "retry"
            error = self._redactor.redact(f"{type(exc).__name__}: {exc}")
        else:
            result = payloads.verdict(answer.status)
            error = None if result == "delivered" else _answer_text(answer)
            retry_after = payloads.parse_retry_after(answer.headers.get("retry-after"))
        now = self._clock()
        retry_at = now + payloads.retry_delay(claimed.attempts + 1, self._rand(), retry_after)
        result = self._outbox.settle(
            claimed, self._holder, now, result, error=error, retry_at=retry_at
        )
        with self._counts_lock:
            key = (claimed.webhook, result)
            self._counts[key] = self._counts.get(key, 0) + 1
        if result != "delivered":
            log.warning(
                "webhook %s: delivery %s %s: %s",
                claimed.webhook,
                claimed.id,
                "gave up" if result == "dead" else "will be retried",
                error,
            )


def _answer_text(answer: HttpAnswer) -> str:
    text = answer.body.decode("utf-8", "replace").strip().replace("\n", " ")[:200]
    return f"HTTP {answer.status}" + (f": {text}" if text else "")


class UrlRedactor(logging.Filter):
    """Replaces each webhook URL in log records (and in error text) by its name."""

    def __init__(self, webhooks: Iterable[WebhookConfig]) -> None:
        super().__init__()
        self._urls = [(str(w.url), f"<webhook {w.name}>") for w in webhooks]
        # httpx may print the URL with or without the trailing slash pydantic adds.
        self._urls += [(u.rstrip("/"), n) for u, n in self._urls if u.endswith("/")]
        self._urls.sort(key=lambda pair: -len(pair[0]))

    def redact(self, text: str) -> str:
        for url, name in self._urls:
            text = text.replace(url, name)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class WebhookCollector(Collector):
    """The outbox at scrape time (the same on every replica, read from the database)
    and this process's delivery counts."""

    def __init__(
        self,
        outbox: Outbox,
        worker: Callable[[], DeliveryWorker | None],
        clock: Callable[[], datetime],
    ) -> None:
        self._outbox = outbox
        self._worker = worker
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        worker = self._worker()
        if worker is None:  # no webhook configured: no webhook series at all
            return
        try:
            stats = self._outbox.backlog(self._clock())
        except Exception:
            # rollout_store_up already says the database is unreadable; one line, no trace.
            log.warning("metrics: reading the webhook outbox failed")
            stats = {}
        backlog = GaugeMetricFamily(
            "rollout_webhook_backlog",
            "Webhook deliveries not yet delivered and not given up, by webhook.",
            labels=("webhook",),
        )
        dead = GaugeMetricFamily(
            "rollout_webhook_dead",
            "Webhook deliveries given up (until a person retries them), by webhook.",
            labels=("webhook",),
        )
        oldest = GaugeMetricFamily(
            "rollout_webhook_oldest_pending_seconds",
            "Age of the oldest delivery still pending, by webhook (0 when none).",
            labels=("webhook",),
        )
        for name, (pending, gave_up, age) in sorted(stats.items()):
            backlog.add_metric([name], pending)
            dead.add_metric([name], gave_up)
            oldest.add_metric([name], age)
        deliveries = CounterMetricFamily(
            "rollout_webhook_deliveries",
            "Delivery attempts this process made, by webhook and result (delivered; "
            "retry: failed, will be tried again; dead: given up).",
            labels=("webhook", "result"),
        )
        for (name, result), count in sorted(worker.counts().items()):
            deliveries.add_metric([name, result], count)
        yield from (backlog, dead, oldest, deliveries)
