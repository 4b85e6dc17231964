"""What ``/openapi.json`` says about authentication, which FastAPI cannot infer here:
routes check the bearer token in their own dependencies (controller.auth), not through
``fastapi.security``, so that every refusal has the same JSON body."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

SCHEME = "bearer"
# Operations anyone may call; every other one needs a token (docs/security.md).
PUBLIC_OPERATIONS = frozenset({("get", "/healthz"), ("get", "/readyz")})


def describe_security(app: FastAPI, *, public_metrics: bool) -> None:
    """Declare the bearer scheme for every operation but the public ones, so clients
    generated from the document (and the /docs page's Authorize button) send it."""
    generate = app.openapi
    public = PUBLIC_OPERATIONS | ({("get", "/metrics")} if public_metrics else set())

    def openapi() -> dict[str, Any]:
        schema = generate()  # built once and kept by FastAPI: this edits that copy
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})[SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from `rollout token create`; the role each operation "
            "needs is in docs/security.md.",
        }
        schema["security"] = [{SCHEME: []}]
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if (method, path) in public:
                    operation["security"] = []  # overrides the document-wide requirement
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
