"""The ``rollout`` command's HTTP client: one request, retried when the server says
"not now", with every failure turned into a ``CliError`` that says what happened.

Retries. A 429 (rate limited) or 503 (database unavailable) answer is tried again,
after the server's ``Retry-After`` (seconds or an HTTP date) or else an exponential
backoff with jitter, at most ``RetryPolicy.attempts`` times in all and never past
``RetryPolicy.total_seconds``; each wait is said on stderr. Only requests that are
safe to repeat are retried: reads (GET, HEAD), evaluations (a POST that changes
nothing) and changes that carry an ``Idempotency-Key``. Every change this client
sends carries one, made once per change and sent again unchanged with each retry,
so the server (``controller.http.idempotency``) runs the change at most once and
answers a repeat from its record. A 503 is never recorded there (5xx answers are
not kept), so its retry runs the change for the first time. A connection error or a
timeout is not retried: with the answer lost, the caller cannot tell whether the
server ran the change, and a person should look first.
"""

from __future__ import annotations

import email.utils
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from controller.cli.exits import REFUSED, UNREACHABLE, USAGE, CliError, Unreachable

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
RETRY_STATUSES = frozenset({429, 503})
EVALUATION_PREFIX = "/api/v1/evaluate/"
DEFAULT_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5  # in all, the first included
    total_seconds: float = 60.0  # no retry starts after this long since the first try
    first_delay: float = 0.5  # without Retry-After: 0.5, 1, 2, 4 s ... with jitter
    max_delay: float = 15.0  # a longer Retry-After is waited only this long

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before try ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        backoff: float = self.first_delay * 2.0 ** (attempt - 1)
        return min(backoff * random.uniform(0.8, 1.2), self.max_delay)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def check_server_url(server: str) -> str:
    try:
        url = httpx.URL(server)
    except (httpx.InvalidURL, TypeError) as exc:
        raise CliError(f"--server {server!r} is not a URL ({exc})", USAGE) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise CliError(
            f"--server {server!r}: expected an http(s) URL such as http://127.0.0.1:8080", USAGE
        )
    return server.rstrip("/")


class Api:
    def __init__(
        self,
        server: str,
        token: str | None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        say: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server = check_server_url(server)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._say = say or _to_stderr
        self._sleep = sleep
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        method = method.upper()
        if method in MUTATING and not path.startswith(EVALUATION_PREFIX):
            # One key per change, the same on every retry of it: the server runs it once.
            kwargs["headers"] = {
                **kwargs.get("headers", {}),
                "Idempotency-Key": f'"{uuid.uuid4()}"',
            }
        retryable = (
            method in SAFE
            or path.startswith(EVALUATION_PREFIX)
            or "Idempotency-Key" in kwargs.get("headers", {})
        )
        started = time.monotonic()
        attempt = 1
        while True:
            response = self._send(method, path, kwargs)
            if response.status_code not in RETRY_STATUSES or not retryable:
                return self._answer(path, response)
            asked = retry_after_seconds(response.headers.get("retry-after"))
            delay = self.retry.delay(attempt, asked)
            out_of_time = time.monotonic() - started + delay > self.retry.total_seconds
            if attempt >= self.retry.attempts or out_of_time:
                error = self._answer_error(path, response)
                raise CliError(
                    f"{error}\n(gave up after {attempt} tries in "
                    f"{time.monotonic() - started:.0f}s)",
                    error.exit_code,
                )
            self._say(
                f"server answered {response.status_code} ({_reason(response)}); "
                f"trying again in {delay:.1f}s ({attempt + 1} of {self.retry.attempts})"
            )
            self._sleep(delay)
            attempt += 1

    def _send(self, method: str, path: str, kwargs: dict[str, Any]) -> httpx.Response:
        try:
            return self.client.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise Unreachable(
                f"no answer from {self.server} within {self.timeout:g}s "
                "(--request-timeout, env ROLLOUT_REQUEST_TIMEOUT)"
            ) from None
        except httpx.ConnectError as exc:
            raise Unreachable(
                f"cannot reach the server at {self.server}: {_first_line(exc)}"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CliError(
                f"talking to {self.server} failed: {type(exc).__name__}: {_first_line(exc)}",
                UNREACHABLE,
            ) from None

    def _answer(self, path: str, response: httpx.Response) -> Any:
        if response.status_code == 204:
            return None
        body = self._json(response)
        if response.status_code >= 400 and not _is_evaluation(path, body):
            raise self._answer_error(path, response)
        return body

    def _answer_error(self, path: str, response: httpx.Response) -> CliError:
        return CliError(error_text(response.status_code, self._json(response)), REFUSED)

    def _json(self, response: httpx.Response) -> Any:
        """The body as JSON, or one line saying that whatever answered is not the
        controller (a web server's HTML page, a proxy's error text)."""
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if kind == "application/json" or kind.endswith("+json"):
                return response.json()
        except ValueError:
            pass
        raise CliError(
            f"{self.server} answered {response.status_code} with "
            f"{kind or 'no content type'}, not the controller's JSON: is --server "
            "(env ROLLOUT_SERVER) the rollout controller's address?",
            UNREACHABLE,
        )


def _is_evaluation(path: str, body: Any) -> bool:
    # A missing flag still comes back as an evaluation (404 with errorCode): show it.
    return path.startswith(EVALUATION_PREFIX) and isinstance(body, dict) and "reason" in body


def error_text(status: int, body: Any) -> str:
    if not isinstance(body, dict):
        return f"server answered {status}"
    lines = [f"error ({status}): {body.get('message') or body.get('error') or body}"]
    for problem in body.get("problems", []) or []:
        if not isinstance(problem, dict):
            continue
        where = str(problem.get("field", "?"))
        if problem.get("line"):
            where += f" (line {problem['line']})"
        lines.append(f"  - {where}: {problem.get('message', '')}")
    return "\n".join(lines)


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "busy"
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.reason_phrase or "busy"


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def _to_stderr(message: str) -> None:
    print(f"rollout: {message}", file=sys.stderr, flush=True)
