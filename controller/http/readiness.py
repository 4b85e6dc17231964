"""Probes for /readyz that answer in bounded time however the dependency behaves.

Each probe runs its blocking check on a daemon thread of its own, at most one at a
time: a database that hangs costs one thread, not one per request, and a /readyz
that waits for it gets "timeout" instead of hanging with it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

Report = dict[str, Any]


class Probe:
    def __init__(self, name: str, check: Callable[[], Report]) -> None:
        self.name = name
        self._check = check
        self._lock = threading.Lock()
        self._running: Future[Report] | None = None

    async def report(self, timeout: float) -> Report:
        """The check's report, or not ok with "timeout" if it takes longer."""
        try:
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(self._start())), timeout
            )
        except TimeoutError:
            return {"ok": False, "error": "timeout"}

    def _start(self) -> Future[Report]:
        with self._lock:
            if self._running is None or self._running.done():
                self._running = Future()
                threading.Thread(
                    target=self._run, args=(self._running,), name=f"probe-{self.name}", daemon=True
                ).start()
            return self._running

    def _run(self, future: Future[Report]) -> None:
        try:
            future.set_result(self._check())
        except Exception as exc:  # the error's kind only: messages name hosts and ports
            future.set_result({"ok": False, "error": type(exc).__name__})
