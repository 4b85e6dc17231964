"""The bodies alert sources post: Alertmanager's webhook notification (version 4) as it
sends it, and the plain JSON form. Each is mapped to the core's ``Alert`` here, at the
edge; a bad one is a 422 naming the field, before anything is written."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from controller.api.params import NO_NUL
from stages.alert_mappings import Alert, AlertStatus

# Generous for any real alert, small enough that the table and audit stay sane.
MAX_ALERTS = 1000
MAX_LABELS = 100

LabelName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)]
LabelValue = Annotated[str, StringConstraints(max_length=4096, pattern=NO_NUL)]
Labels = Annotated[dict[LabelName, LabelValue], Field(max_length=MAX_LABELS)]
Key = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)]
Url = Annotated[str, StringConstraints(max_length=4096, pattern=NO_NUL)]
Status = Literal["firing", "resolved"]


def _in_utc(value: datetime) -> datetime:
    # 0001-01-01T00:00:00+14:00 is a valid time with no UTC year to store it in.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once in UTC") from None


Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class AlertmanagerAlert(BaseModel):
    # Alertmanager may add fields in a later version of the same payload: kept out, not refused.
    model_config = ConfigDict(extra="ignore")

    status: Status
    labels: Labels
    annotations: Labels = Field(default_factory=dict)
    startsAt: Instant  # Alertmanager's names, camelCase
    endsAt: Instant | None = None
    generatorURL: Url = ""
    fingerprint: Key

    def alert(self) -> Alert:
        return Alert(
            key=self.fingerprint,
            name=self.labels.get("alertname") or self.fingerprint,
            status=AlertStatus(self.status),
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            starts_at=self.startsAt,
            url=self.generatorURL,
        )


class AlertmanagerBody(BaseModel):
    """Alertmanager's webhook notification (``webhook_configs``), version 4."""

    model_config = ConfigDict(extra="ignore")

    version: Literal["4"] = Field(description="the payload version; only 4 is known")
    groupKey: Annotated[str, StringConstraints(max_length=65536)] = ""
    truncatedAlerts: int = Field(default=0, ge=0)
    status: Status
    receiver: Annotated[str, StringConstraints(max_length=4096)] = ""
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Labels = Field(default_factory=dict)
    externalURL: Url = ""
    alerts: Annotated[list[AlertmanagerAlert], Field(max_length=MAX_ALERTS)]


class PlainAlertBody(BaseModel):
    """One alert from any source: ``{"name", "status", "labels", "url", "id"}``."""

    model_config = ConfigDict(extra="forbid")

    name: Key
    status: Status
    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)
    url: Url = ""
    id: Key | None = Field(
        default=None, description="what a resend shares; default: from name and labels"
    )
    starts_at: Instant | None = Field(
        default=None, description="when this firing began: a new value is a new firing"
    )

    def alert(self) -> Alert:
        labels = {"alertname": self.name, **self.labels}
        return Alert(
            key=self.id or _identity(self.name, self.labels),
            name=self.name,
            status=AlertStatus(self.status),
            labels=labels,
            annotations=dict(self.annotations),
            starts_at=self.starts_at,
            url=self.url,
        )


def _identity(name: str, labels: dict[str, str]) -> str:
    # As Alertmanager's fingerprint: the same name and labels, the same alert.
    text = json.dumps([name, sorted(labels.items())], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
