"""Settings from ``ROLLOUT_*`` environment variables (pydantic-settings).

Built once by the composition root (``controller.app.create_app``) or the CLI;
never a module-level instance, so tests pass their own.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    # How long stored gate evaluations are kept.
    gate_history_retention: str = "14d"
    # This process's name in leases and logs; default: host name and process id.
    replica_id: str | None = None
    # Serve /metrics without a token (only where the network keeps it private); by
    # default a token with the viewer role or better is needed.
    metrics_public: bool = False
