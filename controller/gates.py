"""Reading gates from Prometheus: the adapter behind the ``GateSource`` port.

``PrometheusGates.read`` never raises: an unreachable server, a bad query, a timeout or
an answer that is not one number becomes a reading with outcome ``error`` and a short
text saying what went wrong. What the numbers mean is decided by ``stages.gates``.

Query templates may use ``${rollout}``, ``${flag}``, ``${stage}``, ``${step}``,
``${percent}``, ``${new_variant}`` and ``${old_variant}``; each value is escaped as a
PromQL double-quoted string, so the template writes the quotes: ``{rollout="${rollout}"}``.
"""

from __future__ import annotations

import ast
import json
import re
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from stages.gates import classify
from stages.plan import Gate
from stages.state import GateReading, Outcome

_MAX_ERROR_CHARS = 300


class QueryTemplateError(ValueError):
    """A gate query template that cannot be rendered; the message names the problem."""


class GateSource(Protocol):
    def read(self, gate: Gate, variables: Mapping[str, str], now: datetime) -> GateReading:
        """Evaluate ``gate`` now. Never raises: failures are readings with outcome error."""
        ...

    def ping(self) -> bool:
        """Whether the source answers at all (reported by /readyz)."""
        ...


# --- templates ---------------------------------------------------------------------------

# Go string escapes, which PromQL uses. Other control characters become \xNN, which Go
# reads as one byte: the same character, since they are all ASCII. PromQL's lexer takes
# a literal U+FFFD for broken UTF-8 and rejects the query, so it goes escaped too.
_ESCAPES = {
    "\\": "\\\\",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\ufffd": "\\ufffd",
}
_PLACEHOLDER = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<name>[^}]*)\}|(?P<open>\{))")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def escape_label_value(value: str) -> str:
    """``value`` as the inside of a PromQL double-quoted string (quotes not included)."""
    return "".join(_escape_char(ch) for ch in value)


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02x}"
    if 0xD800 <= code <= 0xDFFF:
        # A lone surrogate has no UTF-8 form, so no PromQL string can hold it.
        raise QueryTemplateError(f"value holds a lone surrogate U+{code:04X}")
    return ch


def render_query(template: str, variables: Mapping[str, str]) -> str:
    """Substitute ``${name}`` with the escaped value; ``$$`` is a literal ``$``.

    A ``$`` followed by anything else stays as written (regex anchors such as ``"x$"``).
    """

    def substitute(match: re.Match[str]) -> str:
        if match.group("dollar"):
            return "$"
        name = match.group("name")
        if name is None:
            raise QueryTemplateError(f"unterminated placeholder at offset {match.start()}")
        if not _NAME.fullmatch(name):
            raise QueryTemplateError(f"invalid placeholder ${{{name}}}")
        if name not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise QueryTemplateError(f"unknown variable ${{{name}}} (known: {known})")
        return escape_label_value(str(variables[name]))

    return _PLACEHOLDER.sub(substitute, template)


# --- the Prometheus adapter --------------------------------------------------------------


class _ResultError(Exception):
    """Prometheus answered, but not with one number."""


class PrometheusGates:
    """Instant queries against one Prometheus server, each bounded by ``timeout_seconds``."""

    def __init__(self, url: str, timeout_seconds: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        # One session, shared by the scheduler and API "test query" requests: serialize.
        self._lock = threading.Lock()
        self._session = requests.Session()
        # No retries: against a down or overloaded Prometheus, retries only add load and
        # delay the error reading; the next tick is the retry.
        self._client = PrometheusConnect(
            url=self.url,
            session=self._session,
            retry=Retry(total=0, read=False, redirect=0),
            timeout=timeout_seconds,  # annotated int upstream; requests takes a float
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PrometheusGates:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def ping(self) -> bool:
        """Whether Prometheus says it is ready to serve queries."""
        # Short: readiness probes must answer quickly even when Prometheus hangs.
        timeout = min(1.0, self.timeout_seconds)
        try:
            with self._lock, self._session.get(f"{self.url}/-/ready", timeout=timeout) as r:
                return r.status_code == 200
        except requests.RequestException:
            return False

    def read(self, gate: Gate, variables: Mapping[str, str], now: datetime) -> GateReading:
        with self._lock:
            return self._read(gate, variables, now)

    def _read(self, gate: Gate, variables: Mapping[str, str], now: datetime) -> GateReading:
        started = time.monotonic()
        query = gate.query
        role = "query"
        values: dict[str, float | None] = {}
        try:
            for role, template in _templates(gate):
                resolved = render_query(template, variables)
                if role == "query":
                    query = resolved
                values[role] = self._instant(resolved)
        except Exception as exc:  # adapters never raise into the loop
            return GateReading(
                gate=gate.name,
                outcome=Outcome.ERROR,
                at=now,
                query=query,
                value=values.get("query"),
                baseline=values.get("baseline"),
                samples=values.get("samples"),
                error=_truncate(self._explain(exc, role)),
                duration_ms=_elapsed_ms(started),
            )
        value, baseline, samples = values["query"], values.get("baseline"), values.get("samples")
        c = classify(gate, value, baseline, samples)
        return GateReading(
            gate=gate.name,
            outcome=c.outcome,
            at=now,
            query=query,
            value=value,
            baseline=baseline,
            samples=samples,
            threshold=c.threshold,
            threshold_value=c.threshold_value,
            error=None,
            duration_ms=_elapsed_ms(started),
        )

    def _instant(self, query: str) -> float | None:
        # Prometheus' own ``timeout`` stops the evaluation server-side at the same deadline.
        result = self._client.custom_query(query, params={"timeout": f"{self.timeout_seconds:g}"})
        return _single_number(result)

    def _explain(self, exc: Exception, role: str) -> str:
        prefix = "" if role == "query" else f"{role}: "
        return prefix + self._describe(exc)

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, QueryTemplateError):
            return f"query template: {exc}"
        if isinstance(exc, _ResultError):
            return str(exc)
        if isinstance(exc, requests.Timeout):  # before ConnectionError: ConnectTimeout is both
            return f"timeout after {self.timeout_seconds:g}s"
        if isinstance(exc, requests.ConnectionError):
            return f"prometheus unreachable at {self.url}: {_os_reason(exc)}"
        if isinstance(exc, PrometheusApiClientException):
            return self._describe_http_error(str(exc))
        if isinstance(exc, ValueError | KeyError | TypeError):
            return f"unexpected answer from {self.url} (is it Prometheus?): {exc!r}"
        return f"{type(exc).__name__}: {exc}"

    def _describe_http_error(self, message: str) -> str:
        status, body = _parse_client_error(message)
        error_type, error = _prometheus_error(body)
        if error_type == "bad_data":
            return f"bad query: {error}"
        if error_type == "execution":  # e.g. many-to-many matching in a join
            return f"query failed: {error}"
        if error_type == "timeout":
            return f"timeout after {self.timeout_seconds:g}s (prometheus: {error})"
        detail = error or body.strip()
        return f"prometheus answered HTTP {status or '?'}" + (f": {detail}" if detail else "")


def _templates(gate: Gate) -> list[tuple[str, str]]:
    """The gate's query templates by role, the main query first."""
    roles = [("query", gate.query), ("baseline", gate.baseline), ("samples", gate.samples)]
    return [(role, template) for role, template in roles if template is not None]


def _single_number(result: Any) -> float | None:
    """One number from ``data.result`` of an instant query; None for an empty vector.

    prometheus-api-client returns only ``data.result``, without ``resultType``: a vector
    or matrix is a list of objects, a scalar or string is ``[time, "text"]``.
    """
    if not isinstance(result, list):
        raise _ResultError(f"unexpected result {result!r:.80}")
    if not result:
        return None
    if all(isinstance(item, dict) for item in result):
        if any("values" in item for item in result):
            raise _ResultError("query returned a range vector; a gate needs an instant value")
        if len(result) > 1:
            raise _ResultError(
                f"query returned {len(result)} series; aggregate it (sum, max) to one"
            )
        return _parse_number(result[0]["value"][1])
    return _parse_number(result[1])  # scalar: [time, "1.5"]


def _parse_number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise _ResultError(
            f"query returned a string ({text!r:.60}); a gate needs a number"
        ) from None


_CLIENT_ERROR = re.compile(r"HTTP Status Code (\d+) \((.*)\)\Z", re.DOTALL)


def _parse_client_error(message: str) -> tuple[int | None, str]:
    """Status and body from prometheus-api-client's 'HTTP Status Code 400 (b'...')'."""
    match = _CLIENT_ERROR.match(message)
    if match is None:
        return None, message
    try:
        raw = ast.literal_eval(match.group(2))
    except (ValueError, SyntaxError):
        return int(match.group(1)), match.group(2)
    body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return int(match.group(1)), body


def _prometheus_error(body: str) -> tuple[str | None, str | None]:
    """``errorType`` and ``error`` of a Prometheus API error body, if it is one."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(decoded, dict):
        return None, None
    return decoded.get("errorType"), decoded.get("error")


def _os_reason(exc: BaseException) -> str:
    """The innermost OS-level reason ("connection refused"), else the exception text."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror.lower()
        nested = getattr(current, "reason", None)
        if not isinstance(nested, BaseException) and current.args:
            nested = current.args[0] if isinstance(current.args[0], BaseException) else None
        current = nested if isinstance(nested, BaseException) else current.__cause__
    return str(exc)


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


__all__ = [
    "GateSource",
    "PrometheusGates",
    "QueryTemplateError",
    "escape_label_value",
    "render_query",
]
