"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from controller.api.answers import Health, Readiness
from controller.jobs.scheduler import Scheduler
from controller.runtime import Runtime, RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


# Both probes together stay under /readyz's promise of an answer within 1 s.
PROBE_TIMEOUT = 0.8


# The route writes its JSONResponse itself (200 or 503): the model documents, it is
# not applied.
@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready: a check failed"}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready when the database answers, a snapshot is loaded and the scheduler's
    passes finish. Answers within 1 s whatever hangs; names no host or port."""
    database, prometheus = await asyncio.gather(
        runtime.probes["database"].report(PROBE_TIMEOUT),
        runtime.probes["prometheus"].report(PROBE_TIMEOUT),
    )
    checks: dict[str, Any] = {"database": database, "snapshot": _snapshot_check(runtime)}
    if runtime.scheduler is not None:
        checks["scheduler"] = _scheduler_check(runtime.scheduler)
    ready = all(c["ok"] for c in checks.values())
    # Prometheus is reported, not required: without it gates hold and then pause on
    # their own, and taking evaluation out of rotation would hurt every service.
    checks["prometheus"] = {**prometheus, "required": False}
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


def _scheduler_check(scheduler: Scheduler) -> dict[str, Any]:
    """A scheduler whose passes stopped finishing is not ok, even if its thread lives."""
    in_flight, oldest = scheduler.in_flight()
    return {
        "ok": scheduler.running and not scheduler.stalled,
        "last_pass_at": scheduler.last_pass_at.isoformat() if scheduler.last_pass_at else None,
        "last_pass_age_seconds": round(scheduler.last_pass_age(), 3),
        "lag_seconds": round(scheduler.last_pass_lag, 3),
        "checks_in_flight": in_flight,
        "oldest_check_seconds": None if oldest is None else round(oldest, 3),
        "slow_rollouts": scheduler.slow_rollouts(),
        "failing_rollouts": len(scheduler.failing()),
        "failing_since": (scheduler.failing_since.isoformat() if scheduler.failing_since else None),
    }


def _snapshot_check(runtime: Runtime) -> dict[str, Any]:
    """What evaluation serves, and how long ago the database last confirmed it: while
    the database is down evaluation goes on from this snapshot and the age grows."""
    holder = runtime.snapshots
    age = holder.age_seconds()
    check: dict[str, Any] = {
        "ok": holder.loaded,
        "revision": holder.current.revision,
        "flags": len(holder.current.flags),
        "confirmed_at": holder.confirmed_at.isoformat() if holder.confirmed_at else None,
        "age_seconds": None if age is None else round(age, 3),
    }
    refresher = runtime.refresher
    if refresher is not None:
        check["poll_seconds"] = runtime.settings.snapshot_poll
        check["polling"] = refresher.running
        # The kind of error only: its message names the database's host and port.
        error = refresher.last_error
        check["last_error"] = error.split(":", 1)[0] if error else None
    return check
