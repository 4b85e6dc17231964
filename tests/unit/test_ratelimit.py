"""The token bucket's arithmetic, with time passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.http.rate_limit import TokenBuckets


def test_a_burst_goes_through_then_the_next_waits_for_one_refill() -> None:
    buckets = TokenBuckets(per_minute=60, burst=3)
    assert [buckets.take("alice", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("alice", now=100.0) == pytest.approx(1.0)
    assert buckets.take("alice", now=100.5) == pytest.approx(0.5)
    assert buckets.take("alice", now=101.0) == 0.0
    assert buckets.take("alice", now=101.0) == pytest.approx(1.0)


def test_refused_requests_take_nothing() -> None:
    buckets = TokenBuckets(per_minute=60, burst=1)
    assert buckets.take("alice", now=0.0) == 0.0
    for _ in range(10):
        assert buckets.take("alice", now=0.5) == pytest.approx(0.5)
    assert buckets.take("alice", now=1.0) == 0.0


def test_refill_stops_at_the_burst() -> None:
    buckets = TokenBuckets(per_minute=120, burst=2)
    buckets.take("alice", now=0.0)
    # An hour idle refills to 2, not to 7200.
    assert [buckets.take("alice", now=3600.0) for _ in range(3)][-1] == pytest.approx(0.5)


def test_each_key_has_its_own_bucket() -> None:
    buckets = TokenBuckets(per_minute=60, burst=1)
    assert buckets.take("alice", now=0.0) == 0.0
    assert buckets.take("alice", now=0.0) > 0
    assert buckets.take("bob", now=0.0) == 0.0


def test_idle_buckets_are_dropped_as_they_are_full_again() -> None:
    buckets = TokenBuckets(per_minute=60, burst=2)  # full again 2 s after last use
    for i in range(50):
        buckets.take(f"client-{i}", now=0.0)
    assert len(buckets) == 50
    buckets.take("late", now=5.0)
    assert len(buckets) == 1


def test_memory_is_bounded_and_the_least_recent_go_first() -> None:
    buckets = TokenBuckets(per_minute=60, burst=1, max_keys=3)
    for key in ("a", "b", "c"):
        buckets.take(key, now=0.0)
    buckets.take("a", now=0.1)  # a is now the most recent
    buckets.take("d", now=0.2)
    assert len(buckets) == 3
    assert buckets.take("a", now=0.3) > 0  # a was kept: still empty
    assert buckets.take("b", now=0.3) == 0.0  # b was dropped: a fresh bucket


@pytest.mark.parametrize(("per_minute", "burst"), [(0, 1), (-1, 1), (60, 0)])
def test_nonsense_settings_are_refused(per_minute: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBuckets(per_minute=per_minute, burst=burst)


@given(
    per_minute=st.integers(min_value=1, max_value=10_000),
    burst=st.integers(min_value=1, max_value=100),
    gaps=st.lists(st.floats(min_value=0, max_value=5), max_size=200),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    per_minute: int, burst: int, gaps: list[float]
) -> None:
    buckets = TokenBuckets(per_minute=per_minute, burst=burst)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        if buckets.take("k", now) == 0.0:
            allowed += 1
    assert allowed <= burst + now * per_minute / 60 + 1e-9
