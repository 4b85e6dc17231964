"""Request bodies of the REST API (pydantic, at the edge only). Unknown fields are
refused so a typo (``"forse": true``) is an error, not a silent no-op."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.api.params import NO_NUL
from controller.auth import MAX_EXPIRY, Role
from stages.durations import parse_duration

# An action's reason goes into the audit log; the UI's forms take the same limit.
REASON_MAX_LENGTH = 2000


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ActionBody(Body):
    reason: str = Field(default="", max_length=REASON_MAX_LENGTH, pattern=NO_NUL)
    force: bool = False
    immediate: bool = False
    version: int | None = Field(default=None, ge=0, description="compare-and-swap: refuse if stale")


class PlanBody(Body):
    # Bounded by the body limit; the plan's own limit (stages.limits, in UTF-8 bytes)
    # is checked where the problem can name the field `plan`.
    yaml: str | None = Field(default=None, description="plan file text")
    plan: dict[str, Any] | None = Field(default=None, description="plan as JSON")
    reason: str = Field(
        default="",
        max_length=REASON_MAX_LENGTH,
        pattern=NO_NUL,
        description="why: kept with the plan revision and in the audit log",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> PlanBody:
        if (self.yaml is None) == (self.plan is None):
            raise ValueError("send exactly one of 'yaml' (plan file text) or 'plan' (JSON)")
        return self


class SwitchBody(Body):
    reason: str = Field(default="", max_length=REASON_MAX_LENGTH, pattern=NO_NUL)
    version: int | None = Field(default=None, ge=0)


class TokenBody(Body):
    name: str = Field(min_length=1, max_length=128, pattern=NO_NUL)
    role: Role
    expires: str | None = Field(
        default=None,
        max_length=64,
        description="lifetime from now, e.g. 90d, 12h (at most 3650d); null: never expires",
    )

    @field_validator("expires")
    @classmethod
    def _lifetime(cls, value: str | None) -> str | None:
        if value is not None:
            span = parse_duration(value)  # its ValueError names the accepted forms
            if not timedelta(0) < span <= MAX_EXPIRY:
                raise ValueError(f"must be more than 0s and at most {MAX_EXPIRY.days}d")
        return value

    @property
    def expires_in(self) -> timedelta | None:
        return None if self.expires is None else parse_duration(self.expires)


class FreezeBody(Body):
    reason: str = Field(
        min_length=1, max_length=REASON_MAX_LENGTH, pattern=NO_NUL, description="e.g. INC-123"
    )
    until: str = Field(
        max_length=64,
        pattern=NO_NUL,
        description="HH:MM (the next such time, in tz, UTC by default), a duration (2h) "
        "or an ISO 8601 time",
    )
    tz: str | None = Field(default=None, max_length=64, pattern=NO_NUL, description="IANA zone")
    scope: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="label=value terms, all must match (rollout=NAME: one rollout); "
        "empty: every rollout",
    )
