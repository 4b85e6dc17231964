"""The only place that turns the controller's errors into HTTP status codes. Every
error body is JSON: ``{"error": code, "message": text, "problems": [{"field", ...}]}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.errors import (
    Conflict,
    ControllerError,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
    VersionConflict,
)

log = logging.getLogger(__name__)

STATUS: list[tuple[type[ControllerError], int]] = [
    (NotFound, 404),
    (Invalid, 422),
    (Conflict, 409),
    (Unauthorized, 401),
    (Forbidden, 403),
]


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": code, "message": message, **extra}


def _status_of(exc: ControllerError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


async def _controller_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ControllerError)
    extra: dict[str, Any] = {}
    if isinstance(exc, Invalid):
        extra["problems"] = exc.problems
    if isinstance(exc, VersionConflict) and exc.current_version is not None:
        extra["current_version"] = exc.current_version
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return JSONResponse(
        error_body(exc.code, exc.message, **extra), status_code=_status_of(exc), headers=headers
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"field": ".".join(str(part) for part in e.get("loc", ())), "message": e.get("msg", "")}
        for e in exc.errors()
    ]
    fields = ", ".join(str(p["field"]) for p in problems)
    return JSONResponse(
        error_body("invalid", f"invalid request: {fields}", problems=problems), status_code=422
    )


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        error_body("http_error", str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


async def _database_down(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    return JSONResponse(
        error_body("database_unavailable", "the database is unavailable; nothing was changed"),
        status_code=503,
        headers={"Retry-After": "5"},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ControllerError, _controller_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(PoolTimeout, _database_down)
