"""The baseline for the HTTP benchmark: a bare ASGI app doing the same evaluation.

No framework, no middleware and no authentication: route by path, parse the query or
the JSON body, evaluate with the same compiled snapshot the controller serves, and
write the same JSON with the same functions. What the controller's evaluation routes
cost beyond this is what they add per request (auth, limits, counting, latency
sampling, routing).

    python -m tests.benchmarks.bare_asgi --snapshot FILE --port PORT

``FILE`` is a ``GET /api/v1/snapshot`` answer. Served by uvicorn with the settings
``rollout serve`` uses, so only the app differs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import uvicorn

from controller.api.evaluation import ofrep_item
from flags.codec import evaluation_to_dict, snapshot_from_dict
from flags.model import ErrorCode, EvaluationContext
from flags.snapshot import Snapshot

NATIVE = "/api/v1/evaluate/"
OFREP_BULK = "/ofrep/v1/evaluate/flags"
OFREP_SINGLE = OFREP_BULK + "/"


def dumps(content: Any) -> bytes:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def context_of(body: bytes) -> EvaluationContext:
    raw = (json.loads(body) if body.strip() else {}).get("context") or {}
    attributes = dict(raw)
    return EvaluationContext(attributes.pop("targetingKey", None), attributes)


class BareApp:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # lifespan: nothing to start
        path: str = scope["path"]
        if path.startswith(NATIVE):
            params = dict(parse_qsl(scope["query_string"].decode("latin-1")))
            key = params.pop("targetingKey", None)
            evaluation = self.snapshot.evaluate(path[len(NATIVE) :], EvaluationContext(key, params))
            status = 404 if evaluation.error_code is ErrorCode.FLAG_NOT_FOUND else 200
            await respond(send, status, dumps(evaluation_to_dict(evaluation)))
            return
        body = await read_body(receive)
        if path == OFREP_BULK:
            items = [ofrep_item(e)[1] for e in self.snapshot.evaluate_all(context_of(body))]
            await respond(send, 200, dumps({"flags": items}))
        elif path.startswith(OFREP_SINGLE):
            key = path[len(OFREP_SINGLE) :]
            status, item = ofrep_item(self.snapshot.evaluate(key, context_of(body)))
            await respond(send, status, dumps(item))
        else:
            await respond(send, 404, b'{"error":"not_found"}')


async def read_body(receive: Any) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bare ASGI evaluation baseline")
    parser.add_argument("--snapshot", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    snapshot = snapshot_from_dict(json.loads(args.snapshot.read_text()))
    # The same uvicorn settings as `rollout serve` (controller/cli.py).
    uvicorn.run(
        BareApp(snapshot), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
