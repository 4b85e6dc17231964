"""The subset of PromQL that gate queries use, answered from simulated counters the way
Prometheus would, vectorised over many evaluation instants at once.

Supported: selectors with ``=`` matchers, ``rate``/``increase`` over a range (with
Prometheus' extrapolation, zero-floor rule included), ``sum`` and ``sum by (...)``,
``histogram_quantile`` (linear interpolation within the bucket, the +Inf-bucket rule,
monotonicity repair), ``/``, ``*``, ``+``, ``-`` between vectors or with numbers.
Anything else raises ``UnsupportedQuery``: the benchmark must not guess at a query.

A vector is a dict from label set to an array over the evaluation instants; NaN marks
an instant where the series has no sample (Prometheus would drop the element). An empty
result and NaN both mean no data to ``stages.gates.classify``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Labels = frozenset[tuple[str, str]]
Array = NDArray[np.float64]
Vector = dict[Labels, Array]


class UnsupportedQuery(ValueError):
    pass


# --- parsing -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Number:
    value: float


@dataclass(frozen=True, slots=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value), op = ~ != !~
    range_s: float | None  # set for a range selector (``[5m]``)


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Sum:
    by: tuple[str, ...] | None  # None: sum everything into one series
    expr: Node


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Node
    right: Node


Node = Number | Selector | Call | Sum | Binary

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?(?:e[-+]?\d+)?)(?![smhdw\w])|(?P<dur>\d+[smhdw])"
    r"|(?P<str>\"(?:[^\"\\]|\\.)*\")|(?P<id>[a-zA-Z_:][\w:]*)|(?P<op>=~|!=|!~|[(){}\[\],=/*+-]))"
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_FUNCTIONS = {"rate", "increase", "histogram_quantile"}


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise UnsupportedQuery(f"cannot read {text[pos : pos + 20]!r}")
        out.append(match.group(match.lastgroup or "op"))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise UnsupportedQuery(f"expected {expected or 'more'}, found {token!r}")
        self.at += 1
        return token

    def expr(self) -> Node:
        node = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            node = Binary(op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.atom()
        while self.peek() in ("/", "*"):
            op = self.take()
            node = Binary(op, node, self.atom())
        return node

    def atom(self) -> Node:
        token = self.take()
        if token == "(":
            node = self.expr()
            self.take(")")
            return node
        if re.fullmatch(r"\d.*", token):
            return Number(float(token))
        if token == "sum":
            return self.sum()
        if token in _FUNCTIONS and self.peek() == "(":
            self.take("(")
            args = [self.expr()]
            while self.peek() == ",":
                self.take(",")
                args.append(self.expr())
            self.take(")")
            return Call(token, tuple(args))
        return self.selector(token)

    def sum(self) -> Sum:
        by = self.grouping()
        self.take("(")
        inner = self.expr()
        self.take(")")
        return Sum(by if by is not None else self.grouping(), inner)

    def grouping(self) -> tuple[str, ...] | None:
        if self.peek() != "by":
            return None
        self.take("by")
        self.take("(")
        names = [self.take()]
        while self.peek() == ",":
            self.take(",")
            names.append(self.take())
        self.take(")")
        return tuple(names)

    def selector(self, metric: str) -> Selector:
        matchers: list[tuple[str, str, str]] = []
        if self.peek() == "{":
            self.take("{")
            while self.peek() != "}":
                name, op = self.take(), self.take()
                if op not in ("=", "=~", "!=", "!~"):
                    raise UnsupportedQuery(f"unknown matcher {op!r}")
                value = self.take()[1:-1].replace("\\\\", "\\").replace('\\"', '"')
                matchers.append((name, op, value))
                if self.peek() == ",":
                    self.take(",")
            self.take("}")
        range_s = None
        if self.peek() == "[":
            self.take("[")
            duration = self.take()
            range_s = float(duration[:-1]) * _UNITS[duration[-1]]
            self.take("]")
        return Selector(metric, tuple(matchers), range_s)


def parse(text: str) -> Node:
    parser = _Parser(text)
    node = parser.expr()
    if parser.peek() is not None:
        raise UnsupportedQuery(f"unexpected {parser.peek()!r}")
    return node


# --- evaluating ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scrapes:
    """Cumulative counter samples: ``values[series][k]`` was scraped at ``times[k]``."""

    times: Array  # seconds, increasing
    series: Mapping[tuple[str, Labels], Array]


# What ``${step_window}`` renders to here: ``increase(x[STEP_WINDOW])`` is the count since
# the step began, read exactly (the value now minus the value at the step's start).
STEP_WINDOW = "315360000s"
_STEP_WINDOW_S = 315360000.0


def evaluate(node: Node, scrapes: Scrapes, at: Array, since: float | None = None) -> Vector | float:
    """``node`` at each instant of ``at`` (seconds, same clock as the scrapes); ``since``
    is when the current step began, for ``[${step_window}]`` ranges."""
    match node:
        case Number(value=value):
            return value
        case Selector():
            raise UnsupportedQuery("an instant selector of a counter is not a gate value")
        case Call(name="increase", args=(Selector() as sel,)) if sel.range_s == _STEP_WINDOW_S:
            if since is None:
                raise UnsupportedQuery("${step_window} needs the step's start")
            return _since(sel, scrapes, at, since)
        case Call(name="rate" | "increase", args=(Selector(range_s=float()) as sel,)):
            return _rate(sel, scrapes, at, is_rate=node.name == "rate")
        case Call(name="histogram_quantile", args=(q_node, inner)):
            q, vector = evaluate(q_node, scrapes, at, since), evaluate(inner, scrapes, at, since)
            if not isinstance(q, float) or isinstance(vector, float):
                raise UnsupportedQuery("histogram_quantile(number, vector)")
            return histogram_quantile(q, vector)
        case Sum(by=by, expr=inner):
            vector = evaluate(inner, scrapes, at, since)
            if isinstance(vector, float):
                raise UnsupportedQuery("sum of a number")
            return _sum(vector, by)
        case Binary(op=op, left=left, right=right):
            return _binary(
                op, evaluate(left, scrapes, at, since), evaluate(right, scrapes, at, since)
            )
    raise UnsupportedQuery(f"unsupported expression {node!r}")


def instant_value(vector: Vector | float, at: Array) -> Array:
    """What a gate reads: one series, or NaN (no data) where there is none."""
    if isinstance(vector, float):
        return np.full(at.shape, vector)
    if len(vector) > 1:
        raise UnsupportedQuery(f"query returns {len(vector)} series; aggregate it to one")
    if not vector:
        return np.full(at.shape, np.nan)
    return next(iter(vector.values()))


def _matches(matchers: Sequence[tuple[str, str, str]], labels: Labels) -> bool:
    have = dict(labels)
    for name, op, value in matchers:
        # Prometheus anchors regular expressions; a missing label is the empty string.
        got = have.get(name, "")
        hit = got == value if op in ("=", "!=") else re.fullmatch(value, got) is not None
        if hit != (op in ("=", "=~")):
            return False
    return True


def _matching(sel: Selector, scrapes: Scrapes) -> dict[Labels, Array]:
    return {
        labels: values
        for (metric, labels), values in scrapes.series.items()
        if metric == sel.metric and _matches(sel.matchers, labels)
    }


def _since(sel: Selector, scrapes: Scrapes, at: Array, since: float) -> Vector:
    """Each series' count from the step's start to each instant: the latest sample at or
    before the instant minus the latest at or before the start (0 if none yet)."""
    last = np.searchsorted(scrapes.times, at, side="right") - 1
    start = int(np.searchsorted(scrapes.times, since, side="right")) - 1
    out: Vector = {}
    for labels, values in _matching(sel, scrapes).items():
        base = values[start] if start >= 0 else 0.0
        out[labels] = np.where(last >= 0, values[np.maximum(last, 0)] - base, np.nan)
    return out


def _rate(sel: Selector, scrapes: Scrapes, at: Array, *, is_rate: bool) -> Vector:
    assert sel.range_s is not None
    first = np.searchsorted(scrapes.times, at - sel.range_s, side="right")
    last = np.searchsorted(scrapes.times, at, side="right") - 1
    return {
        labels: extrapolated_rate(
            scrapes.times, values, first, last, at, sel.range_s, is_rate=is_rate
        )
        for labels, values in _matching(sel, scrapes).items()
    }


def extrapolated_rate(
    times: Array,
    values: Array,
    first: NDArray[np.intp],
    last: NDArray[np.intp],
    at: Array,
    range_s: float,
    *,
    is_rate: bool,
) -> Array:
    """Prometheus' ``extrapolatedRate`` for a counter without resets (promql/functions.go):
    the increase between the first and last sample in the window, extrapolated toward
    the window's edges by up to 1.1 average sample intervals, and never below zero."""
    count = last - first + 1
    ok = count >= 2
    f, la = np.where(ok, first, 0), np.where(ok, last, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = values[la] - values[f]
        to_start = times[f] - (at - range_s)
        to_end = at - times[la]
        sampled = times[la] - times[f]
        average = sampled / np.maximum(count - 1, 1)
        # The counter started at zero no earlier than this: do not extrapolate before it.
        to_zero = np.where(
            result > 0, sampled * (values[f] / np.where(result > 0, result, 1)), np.inf
        )
        to_start = np.where(
            (result > 0) & (values[f] >= 0), np.minimum(to_start, to_zero), to_start
        )
        threshold = average * 1.1
        interval = sampled + np.where(to_start < threshold, to_start, average / 2)
        interval += np.where(to_end < threshold, to_end, average / 2)
        result = result * (interval / sampled)
    if is_rate:
        result = result / range_s
    return np.where(ok, result, np.nan)


def _sum(vector: Vector, by: Sequence[str] | None) -> Vector:
    groups: dict[Labels, list[Array]] = {}
    for labels, values in vector.items():
        key: Labels = frozenset((k, v) for k, v in labels if by is not None and k in by)
        groups.setdefault(key, []).append(values)
    out: Vector = {}
    for key, members in groups.items():
        stacked = np.vstack(members)
        present = ~np.isnan(stacked)
        # A group with no sample at an instant has no element there (NaN), not 0.
        out[key] = np.where(present.any(axis=0), np.nansum(stacked, axis=0), np.nan)
    return out


def _binary(op: str, left: Vector | float, right: Vector | float) -> Vector | float:
    def combine(a: Array | float, b: Array | float) -> Array | float:
        with np.errstate(divide="ignore", invalid="ignore"):
            if op == "/":
                return np.divide(a, b)
            if op == "*":
                return np.multiply(a, b)
            return np.add(a, b) if op == "+" else np.subtract(a, b)

    if isinstance(left, float) and isinstance(right, float):
        return float(combine(left, right))
    if isinstance(left, float):
        assert isinstance(right, dict)
        return {k: np.asarray(combine(left, v)) for k, v in right.items()}
    if isinstance(right, float):
        return {k: np.asarray(combine(v, right)) for k, v in left.items()}
    # One-to-one matching on identical label sets (the metric name is not a label here).
    return {k: np.asarray(combine(v, right[k])) for k, v in left.items() if k in right}


def histogram_quantile(q: float, vector: Vector) -> Vector:
    """Prometheus' ``histogram_quantile`` over classic ``le`` buckets, per group of the
    other labels; each group's buckets are one array per instant."""
    groups: dict[Labels, list[tuple[float, Array]]] = {}
    for labels, values in vector.items():
        le = dict(labels).get("le")
        if le is None:
            continue
        rest: Labels = frozenset((k, v) for k, v in labels if k != "le")
        groups.setdefault(rest, []).append((float(le), values))
    out: Vector = {}
    for rest, buckets in groups.items():
        buckets.sort(key=lambda b: b[0])
        bounds = np.array([b for b, _ in buckets])
        counts = np.column_stack([v for _, v in buckets])
        out[rest] = bucket_quantile(q, bounds, counts)
    return out


def bucket_quantile(q: float, bounds: Array, counts: Array) -> Array:
    """promql/quantile.go ``bucketQuantile`` for each row of ``counts`` (instants x
    buckets, cumulative, bounds ascending)."""
    rows = counts.shape[0]
    if q < 0:
        return np.full(rows, -np.inf)
    if q > 1:
        return np.full(rows, np.inf)
    if len(bounds) < 2 or not np.isinf(bounds[-1]):
        return np.full(rows, np.nan)  # no +Inf bucket: Prometheus answers NaN
    missing = np.isnan(counts).any(axis=1)
    filled = np.where(np.isnan(counts), 0.0, counts)
    # ensureMonotonic: separately extrapolated bucket rates may dip; take the running max.
    filled = np.maximum.accumulate(filled, axis=1)
    observations = filled[:, -1]
    rank = q * observations
    # The first bucket, +Inf excluded, whose count reaches the rank; none: the +Inf one.
    reaches = filled[:, :-1] >= rank[:, None]
    b = np.where(reaches.any(axis=1), reaches.argmax(axis=1), len(bounds) - 1)
    index = np.arange(rows)
    b_low = np.maximum(b - 1, 0)
    start = np.where(b > 0, bounds[b_low], 0.0)
    below = np.where(b > 0, filled[index, b_low], 0.0)
    end = bounds[np.minimum(b, len(bounds) - 2)]
    in_bucket = filled[index, np.minimum(b, len(bounds) - 1)] - below
    with np.errstate(divide="ignore", invalid="ignore"):
        value = start + (end - start) * ((rank - below) / in_bucket)
    # In the +Inf bucket the answer is the highest finite bound; a first bucket whose
    # upper bound is <= 0 answers that bound.
    value = np.where(b == len(bounds) - 1, bounds[-2], value)
    value = np.where((b == 0) & (bounds[0] <= 0), bounds[0], value)
    return np.where(missing | (observations == 0), np.nan, value)
