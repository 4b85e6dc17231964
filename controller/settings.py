"""Settings from ``ROLLOUT_*`` environment variables (pydantic-settings).

Built once by the composition root (``controller.http.app.create_app``) or the CLI;
never a module-level instance, so tests pass their own.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from controller.deadline_http import redact_url
from controller.notify.config import WebhookConfig, unique_names
from stages.durations import parse_duration
from stages.problems import PlanError
from stages.windowfile import parse_windows_text
from stages.windows import Window

_URL_FIELDS = frozenset({"prometheus_url", "database_url", "public_url"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ROLLOUT_", extra="ignore")

    database_url: str = "sqlite:///./rollout.db"
    prometheus_url: str = "http://127.0.0.1:9090"
    # Prometheus credentials (docs/security.md): basic auth, as a username with a password
    # or a password file, or a bearer token file; files are read again when they change.
    # Userinfo in the URL works too; it is never shown.
    prometheus_username: str | None = None
    prometheus_password: SecretStr | None = None
    prometheus_password_file: Path | None = Field(default=None, validate_default=True)
    prometheus_bearer_token_file: Path | None = Field(default=None, validate_default=True)
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
    # Largest Prometheus answer a gate read accepts, in bytes (one series is ~200 bytes).
    gate_max_answer_bytes: int = Field(default=4 << 20, ge=1024, le=1 << 30)
    # How often the scheduler looks for rollouts whose `interval` has passed.
    scheduler_tick: float = Field(default=1.0, gt=0, le=60)
    # Rollouts checked at the same time (each check has its own deadline: its interval,
    # at most 60 s); one slow rollout holds one worker, never the others.
    scheduler_workers: int = Field(default=8, ge=1, le=256)
    # "Test a gate now" requests answered at the same time; beyond it, 429.
    gate_test_concurrency: int = Field(default=4, ge=1, le=64)
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
    # How long a web UI sign-in lasts before the person signs in again.
    ui_session_ttl: str = "12h"
    # Believe X-Forwarded-Proto (set by a TLS-terminating proxy in front of every
    # replica): the UI's cookies are then Secure when the proxy says https.
    trust_proxy_headers: bool = False
    # Change windows for every rollout whose plan declares none (docs/windows.md): the
    # plan's `windows:` list as YAML or JSON, e.g.
    # [{days: mon-fri, hours: "09:00-17:00", tz: Europe/Berlin}]. Unset: any time.
    change_windows: str | None = None

    @field_validator("prometheus_password_file")
    @classmethod
    def _one_basic_password(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        password = info.data.get("prometheus_password")
        if value is not None and password is not None:
            raise ValueError("set ROLLOUT_PROMETHEUS_PASSWORD or this, not both")
        username = info.data.get("prometheus_username")
        if (value is not None or password is not None) and username is None:
            raise ValueError("a Prometheus password needs ROLLOUT_PROMETHEUS_USERNAME")
        if username is not None and _has_userinfo(info.data.get("prometheus_url")):
            raise ValueError("ROLLOUT_PROMETHEUS_URL holds credentials already: use one")
        return value

    @field_validator("prometheus_bearer_token_file")
    @classmethod
    def _bearer_or_basic(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        basic = info.data.get("prometheus_username") is not None or _has_userinfo(
            info.data.get("prometheus_url")
        )
        if value is not None and basic:
            raise ValueError(
                "set a bearer token file or basic auth for Prometheus (ROLLOUT_PROMETHEUS_USERNAME"
                " or credentials in ROLLOUT_PROMETHEUS_URL), not both"
            )
        return value

    @field_validator("change_windows")
    @classmethod
    def _readable_windows(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            _windows_of(value)
        return value

    def default_windows(self) -> tuple[Window, ...]:
        """The global change windows; none when the setting is unset or blank."""
        if self.change_windows is None or not self.change_windows.strip():
            return ()
        return _windows_of(self.change_windows)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # URLs may hold a password (http://user:pass@host): never in a repr or a log line.
        for name, value in super().__repr_args__():
            shown = redact_url(value) if name in _URL_FIELDS and isinstance(value, str) else value
            yield name, shown

    @field_validator("webhooks")
    @classmethod
    def _unique_webhook_names(cls, value: list[WebhookConfig]) -> list[WebhookConfig]:
        return unique_names(value)

    @field_validator(
        "idempotency_ttl", "webhook_retention", "gate_history_retention", "ui_session_ttl"
    )
    @classmethod
    def _positive_duration(cls, value: str) -> str:
        if parse_duration(value).total_seconds() <= 0:
            raise ValueError("must be a positive duration, e.g. 24h")
        return value


def _windows_of(text: str) -> tuple[Window, ...]:
    try:
        return parse_windows_text(text, "windows")
    except PlanError as exc:
        raise ValueError("; ".join(str(problem) for problem in exc.problems)) from None


def _has_userinfo(url: object) -> bool:
    return isinstance(url, str) and "@" in urllib.parse.urlsplit(url).netloc


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
