"""Reading gates from Prometheus: the adapter behind the ``GateSource`` port.

``PrometheusGates.read`` never raises: an unreachable server, a bad query, a timeout or
an answer that is not one number becomes a reading with outcome ``error`` and a short
text saying what went wrong. What the numbers mean is decided by ``stages.gates``.

Query templates may use ``${rollout}``, ``${flag}``, ``${stage}``, ``${step}``,
``${percent}``, ``${new_variant}``, ``${old_variant}`` and ``${step_window}`` (the time
since the step began, e.g. ``3725s``); each value is escaped for where it stands
(``stages.query_templates``), so the template writes the quotes: ``{rollout="${rollout}"}``.

A compare gate (``kind: compare``) runs its ``events`` and ``exposures`` queries, sums
each answer's samples per side by the label that names it (``by``, valued ``new`` and
``old``), and ``stages.gates.compare_reading`` says what the counts mean.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from controller.deadline_http import (
    AnswerTooLarge,
    DeadlineExceeded,
    HttpAnswer,
    HttpFailure,
    Unreachable,
    basic_authorization,
    fetch,
    redact_url,
)
from stages.compare import Side
from stages.gates import classify, compare_reading
from stages.plan import Comparison, Gate
from stages.query_templates import QueryTemplateError, escape_label_value, render_query
from stages.state import GateReading, Outcome, RolloutState

_MAX_ERROR_CHARS = 300


class GateSource(Protocol):
    def read(
        self,
        gate: Gate,
        variables: Mapping[str, str],
        now: datetime,
        *,
        deadline: float | None = None,
        state: RolloutState | None = None,
    ) -> GateReading:
        """Evaluate ``gate`` now. Never raises: failures are readings with outcome error.

        ``deadline`` is a ``time.monotonic()`` instant that the whole read (query,
        baseline and samples) never runs past; past it, the reading is an error
        "check deadline exceeded". ``state`` is the rollout's: a compare gate needs its
        evidence from earlier steps, and is an error without it."""
        ...

    def ping(self) -> bool:
        """Whether the source answers at all (reported by /readyz)."""
        ...


# --- the Prometheus adapter --------------------------------------------------------------

DEFAULT_MAX_ANSWER_BYTES = 4 << 20  # an instant vector of one series is a few hundred bytes
_PING_MAX_BYTES = 64 << 10
_CHECK_DEADLINE = "check deadline exceeded"


class SyntaxUnchecked(Exception):
    """Prometheus could not say whether a query parses (unreachable, too slow, not it)."""


class _ResultError(Exception):
    """Prometheus answered, but not with one number."""


class _NotACount(Exception):
    """A count that no comparison can use (NaN, infinite, negative): no data."""


class _CheckDeadline(Exception):
    """The caller's deadline for the whole read has passed."""


@dataclass(frozen=True, slots=True)
class PrometheusAuth:
    """How to authenticate to Prometheus: a bearer token file or basic auth, not both.

    Files are read again whenever they change, so a rotated token takes effect
    without a restart.
    """

    bearer_token_file: Path | None = None
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None

    def __post_init__(self) -> None:
        basic = self.username is not None or self.password is not None or self.password_file
        if self.bearer_token_file is not None and basic:
            raise ValueError("use a bearer token file or basic auth for Prometheus, not both")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give the Prometheus password or a password file, not both")


class _SecretFile:
    """A secret kept in a file, read again when the file changes (rotation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # (stat signature, value) swapped as one tuple: safe to read from any thread.
        self._cached: tuple[tuple[int, int, int], str] | None = None

    def value(self) -> str:
        try:
            st = self.path.stat()
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            cached = self._cached
            if cached is not None and cached[0] == signature:
                return cached[1]
            text = self.path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise _ResultError(
                f"cannot read {self.path}: {(exc.strerror or type(exc).__name__).lower()}"
            ) from None
        self._cached = (signature, text)
        return text


class PrometheusGates:
    """Instant queries against one Prometheus server.

    Each query has ``timeout_seconds`` for the whole request (connect, send, every byte
    of the answer) and at most ``max_answer_bytes`` of answer. No lock and no shared
    connection: the scheduler and "test a gate now" requests never wait for each other.
    """

    def __init__(
        self,
        url: str,
        timeout_seconds: float = 5.0,
        *,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        auth: PrometheusAuth | None = None,
    ) -> None:
        base, userinfo_auth = _split_userinfo(url.rstrip("/"))
        auth = auth or PrometheusAuth()
        if userinfo_auth and (auth.bearer_token_file or auth.username is not None):
            raise ValueError("Prometheus credentials in the URL and in settings: use one")
        self._base = base
        # The URL as it may be shown: in readings, logs, the API and the UI.
        self.url = redact_url(url.rstrip("/"))
        self.timeout_seconds = timeout_seconds
        self.max_answer_bytes = max_answer_bytes
        self._userinfo_auth = userinfo_auth
        self._auth = auth
        self._token_file = _SecretFile(auth.bearer_token_file) if auth.bearer_token_file else None
        self._password_file = _SecretFile(auth.password_file) if auth.password_file else None

    def close(self) -> None:
        """Nothing to release: every request has its own connection."""

    def __enter__(self) -> PrometheusGates:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PrometheusGates({self.url!r}, timeout_seconds={self.timeout_seconds:g})"

    def ping(self) -> bool:
        """Whether Prometheus says it is ready to serve queries."""
        # Short: readiness probes must answer quickly even when Prometheus hangs.
        timeout = min(1.0, self.timeout_seconds)
        try:
            answer = fetch(
                "GET",
                f"{self._base}/-/ready",
                headers=self._auth_headers(),
                timeout=timeout,
                max_bytes=_PING_MAX_BYTES,
            )
        except (HttpFailure, _ResultError):
            return False
        return answer.status == 200

    def query_problem(self, timeout: float) -> str | None:
        """Why an instant query cannot be answered now, or None when it can: a query,
        not ``/-/ready``, since a query is what gates send."""
        try:
            self._query("vector(1)", timeout)
        except DeadlineExceeded:
            return f"no answer within {timeout:g}s"
        except Exception as exc:
            return self._describe(exc, None)
        return None

    def read(
        self,
        gate: Gate,
        variables: Mapping[str, str],
        now: datetime,
        *,
        deadline: float | None = None,
        state: RolloutState | None = None,
        at_time: datetime | None = None,
    ) -> GateReading:
        """``at_time`` evaluates the queries as of that instant (Prometheus' ``time``)
        instead of now: ``rollout backtest`` replays a plan over history with it."""
        if gate.compare is not None:
            return self._read_compare(gate, gate.compare, variables, now, deadline, state, at_time)
        started = time.monotonic()
        query = gate.query
        role = "query"
        values: dict[str, float | None] = {}
        try:
            for role, template in gate.query_templates():
                resolved = render_query(template, variables)
                if role == "query":
                    query = resolved
                values[role] = self._instant(resolved, self._budget(deadline), at_time)
        except Exception as exc:  # adapters never raise into the loop
            return GateReading(
                gate=gate.name,
                outcome=Outcome.ERROR,
                at=now,
                query=query,
                value=values.get("query"),
                baseline=values.get("baseline"),
                samples=values.get("samples"),
                error=_truncate(self._explain(exc, role, deadline)),
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

    def _read_compare(
        self,
        gate: Gate,
        spec: Comparison,
        variables: Mapping[str, str],
        now: datetime,
        deadline: float | None,
        state: RolloutState | None,
        at_time: datetime | None = None,
    ) -> GateReading:
        """Both count queries under the same deadline, summed per side by ``spec.by``;
        what the counts mean is ``stages.gates.compare_reading``'s business."""
        started = time.monotonic()
        shown: list[str] = []
        role = "events"
        counts: dict[str, tuple[float, float]] = {}
        try:
            if state is None:
                raise _ResultError("a compare gate is read with its rollout's state")
            for role, template in (("events", spec.events), ("exposures", spec.exposures)):
                resolved = render_query(template, variables)
                shown.append(resolved)
                data = self._query(resolved, self._budget(deadline), at_time)
                counts[role] = _counts_by_side(data, spec)
        except Exception as exc:  # adapters never raise into the loop
            outcome = Outcome.NO_DATA if isinstance(exc, _NotACount) else Outcome.ERROR
            return GateReading(
                gate=gate.name,
                outcome=outcome,
                at=now,
                query="\n".join(shown) or spec.events,
                error=_truncate(f"{role}: {self._describe(exc, deadline)}"),
                duration_ms=_elapsed_ms(started),
            )
        events, exposures = counts["events"], counts["exposures"]
        return compare_reading(
            gate,
            Side(events[0], exposures[0]),
            Side(events[1], exposures[1]),
            state,
            now,
            query="\n".join(shown),
            duration_ms=_elapsed_ms(started),
        )

    def _budget(self, deadline: float | None) -> float:
        """Seconds this query may take: the gate timeout, cut short by the read's deadline."""
        if deadline is None:
            return self.timeout_seconds
        left = deadline - time.monotonic()
        if left <= 0:
            raise _CheckDeadline
        return min(self.timeout_seconds, left)

    def _instant(self, query: str, timeout: float, at_time: datetime | None = None) -> float | None:
        return _single_number(self._query(query, timeout, at_time))

    def _query(self, query: str, timeout: float, at_time: datetime | None = None) -> Any:
        """The ``data`` of an instant query's answer (as of ``at_time``, or now)."""
        # Prometheus' own ``timeout`` stops the evaluation server-side at the same deadline.
        fields = {"query": query, "timeout": f"{timeout:.3f}"}
        if at_time is not None:
            fields["time"] = f"{at_time.timestamp():.3f}"
        form = urllib.parse.urlencode(fields)
        answer = fetch(
            "POST",
            f"{self._base}/api/v1/query",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
                **self._auth_headers(),
            },
            body=form.encode("ascii"),
            timeout=timeout,
            max_bytes=self.max_answer_bytes,
        )
        return _decode(answer)

    def parse_error(self, query: str, timeout: float) -> str | None:
        """Prometheus' own parse error for ``query``, or ``None`` when it parses; raises
        ``SyntaxUnchecked`` when Prometheus cannot say (unreachable, slow, not Prometheus).

        ``/api/v1/format_query`` (Prometheus 2.38 and later) parses and never evaluates.
        Where it is missing (404), an instant query as of 1970-01-01 parses the same way
        and reads no data, since none is that old."""
        answer = self._parse_request("/api/v1/format_query", {"query": query}, timeout)
        if answer.status == 404:
            fields = {"query": query, "time": "0", "timeout": f"{timeout:.3f}"}
            answer = self._parse_request("/api/v1/query", fields, timeout)
        try:
            decoded = json.loads(answer.body)
        except (ValueError, UnicodeDecodeError):
            decoded = None
        if not isinstance(decoded, dict):
            raise SyntaxUnchecked(f"{self.url} answered HTTP {answer.status}, not Prometheus JSON")
        if decoded.get("status") == "success":
            return None
        error = decoded.get("error")
        if decoded.get("errorType") == "bad_data" and isinstance(error, str):
            return error
        raise SyntaxUnchecked(f"{self.url} answered HTTP {answer.status}: {_snippet(answer.body)}")

    def _parse_request(self, path: str, fields: dict[str, str], timeout: float) -> HttpAnswer:
        try:
            return fetch(
                "POST",
                f"{self._base}{path}",
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                    **self._auth_headers(),
                },
                body=urllib.parse.urlencode(fields).encode("ascii"),
                timeout=timeout,
                max_bytes=_PING_MAX_BYTES,
            )
        except (HttpFailure, _ResultError) as exc:
            raise SyntaxUnchecked(self._describe(exc, None)) from None

    def _auth_headers(self) -> dict[str, str]:
        if self._token_file is not None:
            return {"Authorization": f"Bearer {self._token_file.value()}"}
        if self._auth.username is not None:
            password = self._auth.password or ""
            if self._password_file is not None:
                password = self._password_file.value()
            return {"Authorization": basic_authorization(self._auth.username, password)}
        if self._userinfo_auth is not None:
            return {"Authorization": self._userinfo_auth}
        return {}

    def _explain(self, exc: Exception, role: str, deadline: float | None) -> str:
        prefix = "" if role == "query" else f"{role}: "
        return prefix + self._describe(exc, deadline)

    def _describe(self, exc: Exception, deadline: float | None) -> str:
        if isinstance(exc, QueryTemplateError):
            return f"query template: {exc}"
        if isinstance(exc, _CheckDeadline):
            return _CHECK_DEADLINE
        if isinstance(exc, _ResultError | _NotACount):
            return str(exc)
        if isinstance(exc, _PrometheusError):
            return self._describe_prometheus_error(exc)
        if isinstance(exc, DeadlineExceeded):
            if deadline is not None and time.monotonic() >= deadline - 0.01:
                return _CHECK_DEADLINE  # cut short by the caller's deadline, not ours
            return f"timeout after {self.timeout_seconds:g}s"
        if isinstance(exc, Unreachable):
            return f"prometheus unreachable at {self.url}: {exc}"
        if isinstance(exc, AnswerTooLarge):
            return f"{exc} from {self.url} (ROLLOUT_GATE_MAX_ANSWER_BYTES)"
        if isinstance(exc, HttpFailure):
            return f"unexpected answer from {self.url} (is it Prometheus?): {exc}"
        return f"{type(exc).__name__}: {exc}"

    def _describe_prometheus_error(self, exc: _PrometheusError) -> str:
        if exc.error_type == "bad_data":
            return f"bad query: {exc.error}"
        if exc.error_type == "execution":  # e.g. many-to-many matching in a join
            return f"query failed: {exc.error}"
        if exc.error_type == "timeout":
            return f"timeout after {self.timeout_seconds:g}s (prometheus: {exc.error})"
        detail = exc.error or ""
        return f"prometheus answered HTTP {exc.status}" + (f": {detail}" if detail else "")


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """``url`` without its userinfo, and the basic-auth header that userinfo stood for."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and "@" not in parts.netloc:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    bare = urllib.parse.urlunsplit(parts._replace(netloc=host))
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    return bare, basic_authorization(user, password)


# --- the answer ----------------------------------------------------------------------------


class _PrometheusError(Exception):
    """Prometheus said the query failed (``status: error``, or an HTTP error status)."""

    def __init__(self, status: int, error_type: str | None, error: str | None) -> None:
        super().__init__(error)
        self.status, self.error_type, self.error = status, error_type, error


def _decode(answer: HttpAnswer) -> Any:
    """The ``data`` of a successful Prometheus answer; anything else raises."""
    try:
        decoded = json.loads(answer.body)
    except (ValueError, UnicodeDecodeError):
        decoded = None
    if not isinstance(decoded, dict):
        if answer.status != 200:
            raise _PrometheusError(answer.status, None, _snippet(answer.body))
        kind = answer.headers.get("content-type", "no content type").split(";")[0]
        raise _ResultError(f"answer is not a JSON object ({kind}); is it Prometheus?")
    if decoded.get("status") == "error" or answer.status != 200:
        error_type, error = decoded.get("errorType"), decoded.get("error")
        raise _PrometheusError(
            answer.status,
            error_type if isinstance(error_type, str) else None,
            error if isinstance(error, str) else None,
        )
    if decoded.get("status") != "success":
        raise _ResultError('answer without "status": "success"; is it Prometheus?')
    data = decoded.get("data")
    if not isinstance(data, dict) or "resultType" not in data or "result" not in data:
        raise _ResultError("answer without data.resultType and data.result; is it Prometheus?")
    return data


_SHAPES = {
    "matrix": "query returned a range vector; a gate needs an instant value",
    "scalar": "query returned a scalar; a gate needs an instant vector (wrap it in vector())",
    "string": "query returned a string; a gate needs a number",
}
# How Prometheus writes a sample value: Go's float formatting, or NaN and ±Inf.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN")


def _single_number(data: Mapping[str, Any]) -> float | None:
    """One number from an instant vector; None when it has no series."""
    kind, result = data["resultType"], data["result"]
    if kind in _SHAPES:
        raise _ResultError(_SHAPES[kind])
    if kind != "vector":
        raise _ResultError(f"unknown result type {kind!r:.40}; a gate needs an instant vector")
    if not isinstance(result, list):
        raise _ResultError("a vector whose result is not a list; is it Prometheus?")
    if not result:
        return None
    if len(result) > 1:
        raise _ResultError(f"query returned {len(result)} series; aggregate it (sum, max) to one")
    return _sample_value(result[0])


def _counts_by_side(data: Mapping[str, Any], spec: Comparison) -> tuple[float, float]:
    """The (new, old) sums of a vector's samples, by the value of the label ``spec.by``.
    No series, or none for a side, is 0 for it: nothing counted yet. Series of other
    values (a third variant) are left out."""
    kind, result = data["resultType"], data["result"]
    if kind in _SHAPES:
        raise _ResultError(_SHAPES[kind].replace("a gate needs", "a compare gate needs"))
    if kind != "vector":
        raise _ResultError(f"unknown result type {kind!r:.40}; a compare gate needs a vector")
    if not isinstance(result, list):
        raise _ResultError("a vector whose result is not a list; is it Prometheus?")
    sums = {spec.new: 0.0, spec.old: 0.0}
    labelled = False
    for sample in result:
        value = _sample_value(sample)
        metric = sample.get("metric")
        side = metric.get(spec.by) if isinstance(metric, dict) else None
        labelled = labelled or side is not None
        if side not in sums:
            continue
        if not math.isfinite(value) or value < 0:
            raise _NotACount(
                f'the count for {spec.by}="{side}" is {value:g}; a count is a finite number '
                "at least 0"
            )
        sums[side] += value
    if result and not labelled:
        raise _ResultError(
            f"no series has the label {spec.by!r} that names the side; "
            f"keep it: sum by ({spec.by}) (...)"
        )
    return sums[spec.new], sums[spec.old]


def _sample_value(sample: Any) -> float:
    if not isinstance(sample, dict):
        raise _ResultError("a vector sample that is not an object; is it Prometheus?")
    if "histogram" in sample and "value" not in sample:
        raise _ResultError(
            "query returned a native histogram; a gate needs a number "
            "(histogram_quantile, histogram_count, ...)"
        )
    pair = sample.get("value")
    valid_time = (
        isinstance(pair, list)
        and len(pair) == 2
        and isinstance(pair[0], int | float)
        and not isinstance(pair[0], bool)
    )
    if not valid_time:
        raise _ResultError('a sample value that is not [time, "number"]; is it Prometheus?')
    assert isinstance(pair, list)  # for mypy
    text = pair[1]
    if not isinstance(text, str) or not _NUMBER.fullmatch(text):
        raise _ResultError(f"sample value {text!r:.40} is not a number")
    return float(text)


def _snippet(body: bytes) -> str:
    text = " ".join(body[:200].decode("utf-8", "replace").split())
    return text[:120]


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0


def _truncate(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


__all__ = [
    "DEFAULT_MAX_ANSWER_BYTES",
    "GateSource",
    "PrometheusAuth",
    "PrometheusGates",
    "QueryTemplateError",
    "SyntaxUnchecked",
    "escape_label_value",
    "redact_url",
    "render_query",
]
