"""Durations as written in plan files, and the compact form they are shown in."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1w2d", timedelta(days=9)),
        ("500ms", timedelta(milliseconds=500)),
        ("1s500ms", timedelta(seconds=1.5)),
        ("250us", timedelta(microseconds=250)),
        ("1.5h", timedelta(minutes=90)),
        ("0.1s", timedelta(milliseconds=100)),
        ("0s", timedelta(0)),
        ("0", timedelta(0)),
        ("45", timedelta(seconds=45)),
        ("2.5", timedelta(seconds=2.5)),
        (" 5m ", timedelta(minutes=5)),
        (90, timedelta(seconds=90)),
        (0, timedelta(0)),
        (1.5, timedelta(seconds=1.5)),
    ],
)
def test_parses(text: str | int | float, span: timedelta) -> None:
    assert parse_duration(text) == span


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("-5s", "cannot be negative"),
        (-1, "cannot be negative"),
        (-0.5, "cannot be negative"),
        ("5x", "unknown unit 'x'"),
        ("5min", "unknown unit 'min'"),
        ("1h30x", "unknown unit 'x'"),
        ("abc", "not a duration"),
        ("h", "not a duration"),
        ("1h 30m", "not a duration"),
        ("30m1h", "largest to smallest"),
        ("5m5m", "largest to smallest"),
        (True, "not a duration"),
        (float("nan"), "not a duration"),
        (float("inf"), "not a duration"),
        (10**30, "too long"),
        ("9" * 40 + "w", "too long"),
    ],
)
def test_rejects_with_a_clear_message(text: str | int | float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=7), "7d"),
        (timedelta(days=14, hours=1), "14d1h"),
        (timedelta(seconds=1.5), "1s500ms"),
        (timedelta(microseconds=1), "1us"),
    ],
)
def test_formats_compactly(span: timedelta, text: str) -> None:
    assert format_duration(span) == text


def test_format_refuses_a_negative_span() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


@given(st.timedeltas(min_value=timedelta(0)))
def test_format_then_parse_gives_the_same_span(span: timedelta) -> None:
    assert parse_duration(format_duration(span)) == span


@given(st.integers(min_value=0, max_value=10**9))
def test_a_bare_number_is_seconds(seconds: int) -> None:
    assert parse_duration(seconds) == parse_duration(f"{seconds}s") == timedelta(seconds=seconds)


@given(st.text(max_size=20))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        span = parse_duration(text)
    except ValueError:
        return
    assert span >= timedelta(0)
