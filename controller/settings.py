"""Settings from ``ROLLOUT_*`` environment variables (pydantic-settings).

Built once by the composition root (``controller.app.create_app``) or the CLI;
never a module-level instance, so tests pass their own.
"""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from controller.webhook_config import WebhookConfig, unique_names
from stages.durations import parse_duration


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROLLOUT_", extra="ignore")

    database_url: str = "sqlite:///./rollout.db"
    prometheus_url: str = "http://127.0.0.1:9090"
    admin_token: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The scheduler checks gates of running rollouts; off for API-only replicas.
    scheduler: bool = True
    # Largest accepted request body, in bytes (plans are small; this bounds abuse).
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    log_level: str = "info"
    # Seconds before a Prometheus query counts as an error.
    gate_timeout: float = Field(default=5.0, gt=0, le=120)
    # How often the scheduler looks for rollouts whose `interval` has passed.
    scheduler_tick: float = Field(default=1.0, gt=0, le=60)
    # How often each replica reads the database's revision to pick up changes made
    # through other replicas (flags, rollouts, tokens); see docs/replicas.md.
    snapshot_poll: float = Field(default=0.5, gt=0, le=60)
    # How long stored gate evaluations are kept.
    gate_history_retention: str = "14d"
    # This process's name in leases and logs; default: host name and process id.
    replica_id: str | None = None
    # Serve /metrics without a token (only where the network keeps it private); by
    # default a token with the viewer role or better is needed.
    metrics_public: bool = False
    # Upgrade a database whose schema is behind this version at start-up; off by default
    # so a schema change is a deliberate step (`rollout db upgrade`, after a backup).
    db_upgrade: bool = False
    # How long a mutating request's Idempotency-Key and answer are kept for retries.
    idempotency_ttl: str = "24h"
    # Changes (POST/PUT/PATCH/DELETE, not evaluation) per principal per minute, per
    # process, with bursts of up to rate_limit_burst; 0 turns the limit off.
    rate_limit_per_min: float = Field(default=120, ge=0)
    rate_limit_burst: int = Field(default=30, ge=1)
    # Webhooks told of every rollout transition (docs/webhooks.md): a JSON list of
    # {"name", "url", "format": "slack"|"json", "events", "secret"}.
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    # Attempts before a webhook delivery is given up (dead, until a person retries it).
    webhook_max_attempts: int = Field(default=20, ge=1, le=1000)
    # How often each replica looks for webhook deliveries that are due, in seconds.
    webhook_poll: float = Field(default=1.0, gt=0, le=60)
    # How long delivered webhook rows are kept (for GET /api/v1/webhooks/deliveries).
    webhook_retention: str = "7d"
    # Where people reach this controller (the UI), for links in notifications.
    public_url: str | None = None

    @field_validator("webhooks")
    @classmethod
    def _unique_webhook_names(cls, value: list[WebhookConfig]) -> list[WebhookConfig]:
        return unique_names(value)

    @field_validator("idempotency_ttl", "webhook_retention", "gate_history_retention")
    @classmethod
    def _positive_duration(cls, value: str) -> str:
        if parse_duration(value).total_seconds() <= 0:
            raise ValueError("must be a positive duration, e.g. 24h")
        return value


def explain_settings_error(exc: ValidationError | SettingsError) -> str:
    """One line per bad setting, named as its environment variable, never echoing the
    value (a webhook URL or a token is a secret)."""
    if isinstance(exc, SettingsError):
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"ROLLOUT_{field.group(1).upper()}" if field else "a ROLLOUT_* setting"
        return f"invalid settings:\n  - {name}: not valid JSON"
    lines = ["invalid settings:"]
    for error in exc.errors(include_input=False, include_url=False):
        head, *rest = error["loc"] or ("?",)
        where = f"ROLLOUT_{str(head).upper()}" + "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in rest
        )
        lines.append(f"  - {where}: {error['msg']}")
    return "\n".join(lines)
