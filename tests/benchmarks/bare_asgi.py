"""The baseline for the HTTP benchmark: a bare ASGI app doing the same evaluation.

No framework, no middleware and no authentication: route by path, parse the query or
the JSON body, evaluate with the same compiled snapshot the controller serves, and
write the same JSON with the same functions, keeping each answer's rendered bytes as
the controller's lean route does (so the baseline is as fast as we know how to make
it). What the controller's evaluation routes cost beyond this is what they add per
request: authentication, limits, counting, latency sampling, routing.

    python -m tests.benchmarks.bare_asgi --snapshot FILE --port PORT

``FILE`` is a ``GET /api/v1/snapshot`` answer. Served by uvicorn with the settings
``rollout serve`` uses, so only the app differs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from controller.api.evaluation import (
    body_object,
    context_from_json,
    context_from_query,
    native_answer,
    ofrep_answer,
)
from flags.codec import snapshot_from_dict
from flags.model import Evaluation, Reason
from flags.snapshot import Snapshot
from flags.wire import bulk_answer

NATIVE = "/api/v1/evaluate/"
OFREP_BULK = "/ofrep/v1/evaluate/flags"
OFREP_SINGLE = OFREP_BULK + "/"

Writer = Callable[[Evaluation], tuple[int, bytes]]


class BareApp:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        # Rendered answers by evaluation (compiled evaluators return the same object
        # for the same answer), as in controller/http/fastpath.py; never evicted here, since
        # one benchmark's flag has a handful of answers.
        self._native: dict[int, tuple[Evaluation, int, bytes]] = {}
        self._ofrep: dict[int, tuple[Evaluation, int, bytes]] = {}

    def _written(
        self, cache: dict[int, tuple[Evaluation, int, bytes]], evaluation: Evaluation, write: Writer
    ) -> tuple[int, bytes]:
        entry = cache.get(id(evaluation))
        if entry is not None and entry[0] is evaluation:
            return entry[1], entry[2]
        status, body = write(evaluation)
        if evaluation.reason is not Reason.ERROR:
            cache[id(evaluation)] = (evaluation, status, body)
        return status, body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # lifespan: nothing to start
        path: str = scope["path"]
        snapshot = self.snapshot
        if path.startswith(NATIVE):
            query = scope["query_string"]
            key = path[len(NATIVE) :]
            if query:
                evaluation = snapshot.evaluate(key, context_from_query(query))
            else:
                evaluation = snapshot.evaluate_key(key)
            await respond(send, *self._written(self._native, evaluation, native_answer))
            return
        body = await read_body(receive)
        context = context_from_json(body_object(body).get("context"))
        if path == OFREP_BULK:
            ofrep = self._ofrep
            items = [
                self._written(ofrep, e, ofrep_answer)[1] for e in snapshot.evaluate_all(context)
            ]
            await respond(send, 200, bulk_answer(items))
        elif path.startswith(OFREP_SINGLE):
            evaluation = snapshot.evaluate(path[len(OFREP_SINGLE) :], context)
            await respond(send, *self._written(self._ofrep, evaluation, ofrep_answer))
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
    # The same uvicorn settings as `rollout serve` (controller/cli/commands.py).
    uvicorn.run(
        BareApp(snapshot), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
