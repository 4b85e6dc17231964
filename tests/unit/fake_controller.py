"""A controller in memory, for SDK tests: answers the snapshot poll (with ETags) and
takes reports, as the real one does."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flags.sdk.client import REPORT_PATH, SNAPSHOT_PATH
from flags.sdk.transport import Reply, TransportError


def flag(key: str, kind: str, variants: dict[str, Any], default: str, **extra: Any) -> dict:
    """A flag as the controller's GET /api/v1/snapshot writes it."""
    return {
        "key": key,
        "type": kind,
        "variants": variants,
        "default_variant": default,
        "enabled": True,
        "salt": None,
        "description": "",
        "rules": [],
        "version": 1,
        "rollout": None,
        **extra,
    }


def color(value: str) -> dict:
    return flag("color", "string", {"blue": "blue", "green": "green", value: value}, value)


def snapshot_body(revision: int, *flags: dict) -> dict:
    return {"revision": revision, "flags": {f["key"]: f for f in flags}}


class FakeController:
    """Answers the two requests the SDK makes, as the real controller does."""

    def __init__(self) -> None:
        self.body: dict | None = None
        self.down = False
        self.status: int | None = None  # force this status on snapshot requests
        self.report_status = 202
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.reports: list[dict] = []

    def publish(self, revision: int, *flags: dict) -> None:
        self.body = snapshot_body(revision, *flags)

    @property
    def etag(self) -> str:
        assert self.body is not None
        return f'"r{self.body["revision"]}"'

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None
    ) -> Reply:
        self.requests.append((method, path, dict(headers)))
        if self.down:
            raise TransportError("ConnectionRefusedError: [Errno 111] Connection refused")
        if path == SNAPSHOT_PATH:
            if self.status is not None:
                return Reply(self.status, b'{"error": "unauthorized"}')
            if headers.get("If-None-Match") == self.etag:
                return Reply(304, b"", {"etag": self.etag})
            return Reply(200, json.dumps(self.body).encode(), {"etag": self.etag})
        assert path == REPORT_PATH and body is not None
        if self.report_status < 300:
            self.reports.append(json.loads(body))
        return Reply(self.report_status, b"{}")

    def close(self) -> None:
        pass
