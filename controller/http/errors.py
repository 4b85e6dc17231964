"""The only place that turns the controller's errors into HTTP status codes. Every
error body is JSON: ``{"error": code, "message": text, "problems": [{"field", ...}]}``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.api.answers import ErrorAnswer
from controller.auth import Permission, require
from controller.errors import (
    AlreadyExists,
    Busy,
    Conflict,
    ControllerError,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
    VersionConflict,
)

log = logging.getLogger(__name__)

# Every route under these needs a bearer token; the public ones (/healthz, /readyz,
# /openapi.json, the UI's sign-in) are elsewhere.
TOKEN_ONLY_PREFIXES = ("/api/", "/ofrep/")

# What FastAPI raises (an HTTPException) for a body it cannot decode, e.g. not UTF-8.
_BODY_NOT_PARSED = "There was an error parsing the body"

STATUS: list[tuple[type[ControllerError], int]] = [
    (NotFound, 404),
    (Invalid, 422),
    (Conflict, 409),
    (Unauthorized, 401),
    (Forbidden, 403),
    (Busy, 429),
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
    return _controller_response(exc)


def _controller_response(exc: ControllerError) -> JSONResponse:
    extra: dict[str, Any] = {}
    if isinstance(exc, Invalid | AlreadyExists):
        extra["problems"] = exc.problems
    if isinstance(exc, VersionConflict) and exc.current_version is not None:
        extra["current_version"] = exc.current_version
    headers: dict[str, str] | None = None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, Busy):
        headers = {"Retry-After": str(exc.retry_after)}
    return JSONResponse(
        error_body(exc.code, exc.message, **extra), status_code=_status_of(exc), headers=headers
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    refused = _unauthenticated(request)
    if refused is not None:
        return refused
    problems = [
        {"field": ".".join(str(part) for part in e.get("loc", ())), "message": e.get("msg", "")}
        for e in exc.errors()
    ]
    fields = ", ".join(str(p["field"]) for p in problems)
    return JSONResponse(
        error_body("invalid", f"invalid request: {fields}", problems=problems), status_code=422
    )


def _unauthenticated(request: Request) -> JSONResponse | None:
    """The 401 or 403 a route under /api or /ofrep (each needs a token) would have
    answered. FastAPI parses a JSON body before any dependency runs, so without this a
    caller with no valid token, or a role that may not, would get a 422 that describes
    what the route expects."""
    path = request.url.path.removeprefix(request.scope.get("root_path", ""))
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None or not path.startswith(TOKEN_ONLY_PREFIXES):
        return None
    try:
        principal = runtime.tokens.authenticate(request.headers.get("authorization"))
        for permission in _permissions_of(request.scope.get("route")):
            require(principal, permission)
    except (Unauthorized, Forbidden) as exc:
        return _controller_response(exc)
    return None


def _permissions_of(route: object) -> Iterator[Permission]:
    """The permissions a matched route's dependencies demand (controller.runtime.needs);
    none for a path no route matched."""
    if not isinstance(route, APIRoute):
        return
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        permission = getattr(dependant.call, "permission", None)
        if isinstance(permission, Permission):
            yield permission
        pending.extend(dependant.dependencies)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # Routing (404, 405) and body parsing (400) happen before a route's authentication:
    # without a token, those say nothing either.
    refused = _unauthenticated(request)
    if refused is not None:
        return refused
    if exc.status_code == 400 and exc.detail == _BODY_NOT_PARSED:
        return JSONResponse(
            error_body(
                "invalid",
                "the request body could not be read as JSON (UTF-8)",
                problems=[{"field": "body", "message": "not UTF-8 JSON"}],
            ),
            status_code=400,
        )
    return JSONResponse(
        error_body("http_error", str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


async def _unstorable(_request: Request, exc: Exception) -> JSONResponse:
    # The database refused a value (PostgreSQL's SQLSTATE class 22: a NUL in text, a
    # number out of range) that the edge let through. The transaction was rolled back.
    # Not the message: it may quote the value, and values may be secrets.
    orig = getattr(exc, "orig", None)
    log.warning(
        "database refused a value: %s (sqlstate %s)",
        type(orig).__name__,
        getattr(orig, "sqlstate", None),
    )
    return JSONResponse(
        error_body(
            "invalid",
            "the request holds a value the database cannot store; nothing was changed",
            problems=[{"field": "", "message": "a value the database cannot store"}],
        ),
        status_code=422,
    )


async def _database_down(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    return JSONResponse(
        error_body("database_unavailable", "the database is unavailable; nothing was changed"),
        status_code=503,
        headers={"Retry-After": "5"},
    )


# FastAPI documents a 422 it adds itself (to a route with parameters and no 422 of its
# own) as its ``{"detail": [...]}``; the body this module writes is an ErrorAnswer.
_FASTAPI_422 = "HTTPValidationError"
_REF = "#/components/schemas/{model}"


def _document_errors(app: FastAPI) -> None:
    """Make /openapi.json describe the 422 body this module writes."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI builds it once and keeps it: this edits that copy
        schemas = schema.get("components", {}).get("schemas", {})
        if schemas.pop(_FASTAPI_422, None) is None:
            return schema
        schemas.pop("ValidationError", None)
        for body in _response_schemas(schema):
            if body.get("$ref") == _REF.format(model=_FASTAPI_422):
                body["$ref"] = _REF.format(model=ErrorAnswer.__name__)
        if ErrorAnswer.__name__ not in schemas:  # no route names it: add it
            error = ErrorAnswer.model_json_schema(ref_template=_REF)
            schemas.update(error.pop("$defs", {}))
            schemas[ErrorAnswer.__name__] = error
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _response_schemas(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for response in operation.get("responses", {}).values():
                for content in response.get("content", {}).values():
                    if isinstance(content.get("schema"), dict):
                        yield content["schema"]


def install(app: FastAPI) -> None:
    _document_errors(app)
    app.add_exception_handler(ControllerError, _controller_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DataError, _unstorable)
    app.add_exception_handler(OperationalError, _database_down)
    app.add_exception_handler(PoolTimeout, _database_down)
