"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from controller.runtime import Runtime, RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(runtime: RuntimeDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        runtime.store.ping()
        checks["database"] = {"ok": True}
    except Exception as exc:
        checks["database"] = {"ok": False, "error": type(exc).__name__}
    checks["snapshot"] = _snapshot_check(runtime)
    scheduler = runtime.scheduler
    if scheduler is not None:
        checks["scheduler"] = {
            "ok": scheduler.running,
            "last_pass_at": scheduler.last_pass_at.isoformat() if scheduler.last_pass_at else None,
            "lag_seconds": round(scheduler.last_pass_lag, 3),
            "failing_since": (
                scheduler.failing_since.isoformat() if scheduler.failing_since else None
            ),
        }
    ready = all(c["ok"] for c in checks.values())
    # Prometheus is reported, not required: without it gates hold and then pause on
    # their own, and taking evaluation out of rotation would hurt every service.
    checks["prometheus"] = {"ok": runtime.gates.ping(), "required": False}
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


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
        check["last_error"] = refresher.last_error
    return check
