"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from controller.runtime import RuntimeDep

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
    checks["snapshot"] = {
        "ok": runtime.snapshots.loaded,
        "revision": runtime.snapshots.current.revision,
        "flags": len(runtime.snapshots.current.flags),
    }
    scheduler = runtime.scheduler
    if scheduler is not None:
        checks["scheduler"] = {
            "ok": scheduler.running,
            "last_pass_at": scheduler.last_pass_at.isoformat() if scheduler.last_pass_at else None,
            "lag_seconds": round(scheduler.last_pass_lag, 3),
        }
    ready = all(c["ok"] for c in checks.values())
    # Prometheus is reported, not required: without it gates hold and then pause on
    # their own, and taking evaluation out of rotation would hurt every service.
    checks["prometheus"] = {"ok": runtime.gates.ping(), "required": False}
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
