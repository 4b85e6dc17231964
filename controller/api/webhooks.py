"""Webhook deliveries: what the outbox holds (viewer), and trying one again (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from controller.api.answers import (
    CHANGE_ERRORS,
    READ_ERRORS,
    DeliveryAnswer,
    DeliveryList,
    errors,
)
from controller.api.params import MAX_DB_INT, QueryText
from controller.notify.webhooks import DeliveryStatus
from controller.runtime import Admin, Reader, RuntimeDep

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])


@router.get("/deliveries", response_model=DeliveryList, responses=errors(*READ_ERRORS))
def list_deliveries(
    runtime: RuntimeDep,
    _who: Reader,
    status: DeliveryStatus | None = None,
    webhook: QueryText = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Deliveries, newest first: ``pending`` (waiting or being retried), ``dead`` (given
    up; ``last_error`` says why) or ``delivered``."""
    return {"deliveries": runtime.outbox.list(status=status, webhook=webhook, limit=limit)}


@router.post(
    "/deliveries/{delivery}/retry",
    response_model=DeliveryAnswer,
    responses=errors(*CHANGE_ERRORS),
)
def retry_delivery(
    delivery: Annotated[int, Path(ge=1, le=MAX_DB_INT)], runtime: RuntimeDep, _who: Admin
) -> dict[str, Any]:
    """Send a dead (or waiting) delivery again now, with a fresh count of attempts."""
    return runtime.outbox.retry(delivery, runtime.clock())
