"""Waiting for a condition, never for a fixed time: tests pass on a busy machine."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, every: float = 0.05
) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"not within {timeout}s: {what}")
