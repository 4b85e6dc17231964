"""Alerts in: Alertmanager's webhook and the plain JSON form (role ``alerts``, or admin);
and what they did (viewer).

Every valid notification is answered 200 with what each alert did, also when it did
nothing: Alertmanager retries only a 5xx, and a 4xx is for a body it should not send
again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from controller.api.alert_bodies import AlertmanagerBody, PlainAlertBody
from controller.api.answers import (
    CHANGE_ERRORS,
    READ_ERRORS,
    AlertRecords,
    AlertsAnswer,
    errors,
)
from controller.api.params import QueryText
from controller.runtime import Alerter, Reader, RuntimeDep
from stages.alert_mappings import Alert

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


@router.post("/alertmanager", response_model=AlertsAnswer, responses=errors(*CHANGE_ERRORS))
def alertmanager(body: AlertmanagerBody, runtime: RuntimeDep, who: Alerter) -> dict[str, Any]:
    """Alertmanager's webhook notification as it sends it (``webhook_configs``, version 4)."""
    return _receive(runtime, [a.alert() for a in body.alerts], "alertmanager", who.actor)


@router.post("", response_model=AlertsAnswer, responses=errors(*CHANGE_ERRORS))
def plain(body: PlainAlertBody, runtime: RuntimeDep, who: Alerter) -> dict[str, Any]:
    """One alert in a plain form: ``name``, ``status``, ``labels``, ``url``, ``id``."""
    return _receive(runtime, [body.alert()], "json", who.actor)


@router.get("", response_model=AlertRecords, responses=errors(*READ_ERRORS))
def list_alerts(
    runtime: RuntimeDep,
    _who: Reader,
    rollout: QueryText = None,
    holding: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """What alerts did to rollouts, newest first; ``holding=true``: the holds in force."""
    return {"alerts": runtime.alerts.records(rollout=rollout, holding=holding, limit=limit)}


def _receive(runtime: Any, alerts: list[Alert], source: str, actor: str) -> dict[str, Any]:
    results = runtime.alerts.receive(alerts, source=source, actor=actor, now=runtime.clock())
    return {"received": len(alerts), "results": [r.view() for r in results]}
