"""Database tables (SQLModel). Only ``controller.storage.store`` reads and writes them; the
core never sees these classes, only the dataclasses they are mapped to."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way out, on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(nullable: bool = False) -> Any:
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable))


def _serial_id() -> Any:
    # BIGINT on PostgreSQL; SQLite autoincrements only an INTEGER PRIMARY KEY.
    return Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    )


class FlagRow(SQLModel, table=True):
    __tablename__ = "flags"

    key: str = Field(primary_key=True, max_length=128)
    definition: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    managed_by: str | None = Field(default=None, max_length=64)  # the rollout driving it
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class RolloutRow(SQLModel, table=True):
    __tablename__ = "rollouts"

    name: str = Field(primary_key=True, max_length=64)
    flag_key: str = Field(sa_column=Column(String(128), nullable=False, unique=True))
    plan_source: str = Field(sa_column=Column(Text, nullable=False))
    plan: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=32)
    step: int = 0
    step_started_at: datetime | None = _ts(nullable=True)
    observe_until: datetime | None = _ts(nullable=True)
    started_at: datetime | None = _ts(nullable=True)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # Counters and recent gate outcomes: see stages.state.RolloutState.
    bookkeeping: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # What people see and compare-and-swap on: moves when a person acts, a plan changes or
    # the controller makes a transition, not on every gate check.
    version: int = Field(sa_column=Column(Integer, nullable=False))
    # Moves on every write, so no write (a gate check's bookkeeping included) is ever lost.
    row_version: int = Field(default=1, sa_column=Column(Integer, nullable=False))
    # When the scheduler last checked the gates (it checks again after `interval`).
    checked_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class AuditRow(SQLModel, table=True):
    __tablename__ = "audit_events"

    id: int | None = _serial_id()
    at: datetime = _ts()
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64, index=True)
    rollout: str | None = Field(default=None, max_length=64, index=True)
    flag: str | None = Field(default=None, max_length=128, index=True)
    from_status: str | None = Field(default=None, max_length=32)
    to_status: str | None = Field(default=None, max_length=32)
    from_step: int | None = None
    to_step: int | None = None
    version: int | None = None
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    details: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # The hash chain (controller.audit_chain): hex SHA-256 of the previous event, and of
    # this event's content plus prev_hash.
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False))
    hash: str = Field(default="", sa_column=Column(String(64), nullable=False))


class TokenRow(SQLModel, table=True):
    __tablename__ = "tokens"
    # A name is one live token's: revoking a token frees its name for the replacement.
    __table_args__ = (
        Index(
            "ux_tokens_live_name",
            "name",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(max_length=128)
    role: str = Field(max_length=16)
    # sha256 of the secret: the secret itself is shown once, at creation, and never stored.
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    created_by: str = Field(max_length=128)
    created_at: datetime = _ts()
    revoked_at: datetime | None = _ts(nullable=True)
    expires_at: datetime | None = _ts(nullable=True)
    # Written at most once a minute per token (controller.auth.UseRecorder), not per request.
    last_used_at: datetime | None = _ts(nullable=True)


class RevisionRow(SQLModel, table=True):
    """One row: bumped in every transaction that changes what evaluation serves, so a
    replica (or an SDK) can tell cheaply whether its snapshot is stale."""

    __tablename__ = "revision"

    id: int = Field(default=1, primary_key=True)
    value: int = Field(sa_column=Column(BigInteger, nullable=False))


class LeaseRow(SQLModel, table=True):
    """Which replica may act on a rollout until when. Taken and renewed in a write
    transaction; another replica takes it over only after it has expired."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    expires_at: datetime = _ts()


class GateEvaluationRow(SQLModel, table=True):
    """One evaluation of one gate: everything a person needs to see why."""

    __tablename__ = "gate_evaluations"
    __table_args__ = (Index("ix_gate_evaluations_rollout_gate_at", "rollout", "gate", "at"),)

    id: int | None = _serial_id()
    rollout: str = Field(max_length=64)
    gate: str = Field(max_length=128)
    step: int
    at: datetime = _ts()
    query: str = Field(sa_column=Column(Text, nullable=False))
    value: float | None = None
    baseline: float | None = None
    samples: float | None = None
    threshold: str | None = Field(default=None, max_length=32)
    threshold_value: float | None = None
    outcome: str = Field(max_length=16)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    duration_ms: float = 0.0
    # What a compare gate read (counts per side, interval, verdict, its sentence);
    # null for a threshold gate, whose columns above say it all.
    details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class IdempotencyRow(SQLModel, table=True):
    """A mutating request's ``Idempotency-Key`` (controller.http.idempotency): reserved while
    the request runs (``status_code`` null), then the answer to replay to retries.
    Scoped by the principal's token id, never the token itself."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)

    principal: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    # Which request holds the reservation: only it may complete or release it.
    claim: str = Field(max_length=32)
    # sha256 of method, path, query and body: the same key for another request is refused.
    fingerprint: str = Field(max_length=64)
    status_code: int | None = None
    content_type: str | None = Field(default=None, max_length=255)
    body: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = _ts()
    # Pending: when an unfinished reservation counts as abandoned; done: when it is forgotten.
    expires_at: datetime = _ts()


class WebhookOutboxRow(SQLModel, table=True):
    """One notification of one transition to one webhook: inserted in the transition's
    own transaction (so neither exists without the other), delivered later by a
    worker that claims it with a lease (``claimed_by`` until ``claimed_until``)."""

    __tablename__ = "webhook_outbox"
    __table_args__ = (Index("ix_webhook_outbox_status_due", "status", "next_attempt_at"),)

    id: int | None = _serial_id()
    # Sent as X-Rollout-Delivery and Idempotency-Key: the same on every retry.
    delivery_id: str = Field(sa_column=Column(String(36), nullable=False, unique=True))
    created_at: datetime = _ts()
    webhook: str = Field(max_length=64, index=True)
    audit_id: int | None = None
    event: str = Field(max_length=64)
    rollout: str | None = Field(default=None, max_length=64)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16)  # pending, delivered, dead
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, default=0))
    next_attempt_at: datetime = _ts()
    delivered_at: datetime | None = _ts(nullable=True)
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_until: datetime | None = _ts(nullable=True)


class UiSessionRow(SQLModel, table=True):
    """A web UI sign-in. The cookie holds a random session id; only its SHA-256 is
    stored, with the hash of the API token it was opened with, so every replica
    shares the session and a revoked token ends it on the next page."""

    __tablename__ = "ui_sessions"

    id_hash: str = Field(sa_column=Column(String(64), primary_key=True))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, index=True))
    created_at: datetime = _ts()
    expires_at: datetime = _ts()


class PlanRevisionRow(SQLModel, table=True):
    """One applied plan of one rollout (``controller.plan_history``): numbered from 1 per
    rollout, written in the apply's own transaction, never changed."""

    __tablename__ = "plan_revisions"
    __table_args__ = (UniqueConstraint("rollout", "revision", name="uq_plan_revisions_rollout"),)

    id: int | None = _serial_id()
    rollout: str = Field(max_length=64)
    revision: int
    source: str = Field(sa_column=Column(Text, nullable=False))  # as sent; "" for JSON
    plan: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))  # canonical form
    plan_hash: str = Field(sa_column=Column(String(64), nullable=False))  # sha256 of it
    actor: str = Field(max_length=128)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    # What changed against the revision before, in one line ("created: 5 steps, 2 gates").
    summary: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    applied_at: datetime = _ts()


class FreezeRow(SQLModel, table=True):
    """A freeze (stages.freezes): no advance of a rollout in ``scope`` until ``until``,
    unless ended first (``ended_at``). Ended rows stay, for the audit trail and lists."""

    __tablename__ = "freezes"
    __table_args__ = (Index("ix_freezes_ended_until", "ended_at", "until"),)

    id: int | None = _serial_id()
    reason: str = Field(sa_column=Column(Text, nullable=False))
    # [[key, value], ...]: all must match; empty: every rollout.
    scope: list[list[str]] = Field(sa_column=Column(JSON, nullable=False))
    until: datetime = _ts()
    created_by: str = Field(max_length=128)
    created_at: datetime = _ts()
    ended_at: datetime | None = _ts(nullable=True)
    ended_by: str | None = Field(default=None, max_length=128)
    # "unfrozen" (a person) or "expired" (its time came).
    end_reason: str | None = Field(default=None, max_length=32)


class AlertRow(SQLModel, table=True):
    """What one firing of one alert did to one rollout (controller/alerts.py). The
    unique key is the idempotency of Alertmanager's resends: the same fingerprint and
    startsAt act on a rollout once. ``holding`` is true while a hold it placed stops
    the rollout's advances; its resolved notification clears it."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("alert_key", "occurrence", "rollout", name="uq_alerts_occurrence"),
        Index("ix_alerts_rollout_holding", "rollout", "holding"),
    )

    id: int | None = _serial_id()
    # Alertmanager's fingerprint, or the plain form's id.
    alert_key: str = Field(sa_column=Column(String(255), nullable=False))
    # startsAt as ISO text ("-" when the plain form sends none): a new firing, a new value.
    occurrence: str = Field(sa_column=Column(String(64), nullable=False))
    rollout: str = Field(sa_column=Column(String(64), nullable=False))
    name: str = Field(sa_column=Column(String(255), nullable=False))
    source: str = Field(max_length=16)  # alertmanager, json
    action: str = Field(max_length=16)  # hold, rollback, abort
    status: str = Field(max_length=16)  # firing, resolved
    holding: bool = Field(default=False, sa_column=Column(Boolean, nullable=False))
    # What a held rollout says ("alert HighErrorRate firing since 12:03 UTC ...").
    reason: str = Field(sa_column=Column(Text, nullable=False))
    # What the alert did: held, rolled back, refused (and why).
    outcome: str = Field(sa_column=Column(Text, nullable=False))
    labels: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    url: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    starts_at: datetime | None = _ts(nullable=True)
    received_at: datetime = _ts()
    resolved_at: datetime | None = _ts(nullable=True)
