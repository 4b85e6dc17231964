"""Bucketing: flagd's fractional hash, monotonic in percent, independent across salts."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import mmh3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flags.bucketing import bucket, is_in, percent_to_units, pick_arm
from flags.model import SplitArm

VECTORS_FILE = Path(__file__).parent.parent / "data" / "flagd-fractional-vectors.json"
CASES: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text())["cases"]
KEYS = 100_000


def vector_id(case: dict[str, Any]) -> str:
    return str(case["bucketing_value"])


@pytest.mark.parametrize("case", CASES, ids=vector_id)
def test_murmur3_matches_flagd(case: dict[str, Any]) -> None:
    assert mmh3.hash(case["bucketing_value"], 0, False) == case["mmh3_u32"]


@pytest.mark.parametrize("case", CASES, ids=vector_id)
def test_bucket_matches_flagd_with_whole_value_as_key(case: dict[str, Any]) -> None:
    assert bucket("", case["bucketing_value"]) == case["bucket_of_10000"]


@pytest.mark.parametrize("case", CASES, ids=vector_id)
def test_bucket_is_plain_concatenation_of_salt_and_key(case: dict[str, Any]) -> None:
    value = case["bucketing_value"]
    assert bucket(value[:3], value[3:]) == case["bucket_of_10000"]


FOUR_SUITS = [SplitArm(suit, 2500) for suit in ("clubs", "diamonds", "hearts", "spades")]
LOWER_UPPER = [SplitArm("lower", 5000), SplitArm("upper", 5000)]


@pytest.mark.parametrize("case", CASES, ids=vector_id)
def test_pick_arm_matches_flagd_fractional_variant(case: dict[str, Any]) -> None:
    if "flagd_variant_of_four_25s" in case:
        arms, expected = FOUR_SUITS, case["flagd_variant_of_four_25s"]
    else:
        arms, expected = LOWER_UPPER, case["flagd_variant_of_lower50_upper50"]
    assert pick_arm(bucket("", case["bucketing_value"]), arms) == expected


def test_hash_edge_values_land_in_first_and_last_bucket() -> None:
    by_hash = {case["mmh3_u32"]: case["bucket_of_10000"] for case in CASES}
    assert by_hash[0] == 0
    assert by_hash[2**32 - 1] == 9999


@pytest.mark.parametrize(
    ("salt", "key", "u32", "expected"),
    [
        # 1_596_256_610 * 10_000 = 15_962_566_100_000; / 2^32 = 3716.57 -> 3716
        ("memory-layer", "user-1", 1_596_256_610, 3716),
        # 2_186_381_984 * 10_000 = 21_863_819_840_000; / 2^32 = 5090.57 -> 5090
        ("memory-layer", "user-42", 2_186_381_984, 5090),
        # 2^31 - 1 -> 21_474_836_470_000 / 2^32 = 4999.999998 -> 4999 (just below half)
        ("SI7", "p-", 2**31 - 1, 4999),
        # 2^31 -> exactly 10_000 / 2 = 5000
        ("6Lv", "T0", 2**31, 5000),
        # 2^32 - 1 -> 42_949_672_950_000 / 2^32 = 9999.999998 -> 9999, never 10000
        ("ceQ", "dGm", 2**32 - 1, 9999),
    ],
)
def test_bucket_known_answers_by_hand(salt: str, key: str, u32: int, expected: int) -> None:
    assert mmh3.hash(salt + key, 0, False) == u32
    assert bucket(salt, key) == expected


@pytest.mark.parametrize(
    ("percent", "units"),
    [(0, 0), (0.01, 1), (0.07, 7), (1.15, 115), (5, 500), (99.99, 9999), (100, 10000)],
)
def test_percent_to_units_rounds_to_hundredths(percent: float, units: int) -> None:
    assert percent_to_units(percent) == units


@pytest.mark.parametrize(
    ("percent", "units"),
    [(-5, 0), (150, 10000), (float("nan"), 0), (float("inf"), 10000), (float("-inf"), 0)],
)
def test_percent_to_units_clamps_out_of_range(percent: float, units: int) -> None:
    assert percent_to_units(percent) == units


def test_is_in_uses_strict_less_than() -> None:
    # At 0.07 % buckets 0..6 are in: 0.07 * 100 is 7.000000000000001 in floating point,
    # which a naive comparison would round the wrong way for bucket 7.
    assert is_in(6, 0.07)
    assert not is_in(7, 0.07)
    assert not is_in(0, 0)
    assert is_in(9999, 100)


def test_pick_arm_skips_zero_weight_arms() -> None:
    arms = [SplitArm("a", 0), SplitArm("b", 10000)]
    assert pick_arm(0, arms) == "b"


@given(salt=st.text(max_size=20), key=st.text(max_size=40))
def test_bucket_is_always_in_range(salt: str, key: str) -> None:
    assert 0 <= bucket(salt, key) <= 9999


@given(
    key=st.text(min_size=1, max_size=40),
    low=st.floats(min_value=0, max_value=100),
    high=st.floats(min_value=0, max_value=100),
)
def test_membership_is_monotonic_in_percent(key: str, low: float, high: float) -> None:
    low, high = min(low, high), max(low, high)
    user = bucket("memory-layer", key)
    if is_in(user, low):
        assert is_in(user, high)


def in_at(salt: str, percent: float) -> list[bool]:
    return [is_in(bucket(salt, f"user-{i}"), percent) for i in range(KEYS)]


def test_five_percent_of_users_are_in_at_five_percent() -> None:
    share = sum(in_at("memory-layer", 5)) / KEYS
    # Binomial sd at p = 0.05, n = 100,000 is 0.069 pp: ±0.3 pp is more than 4 sd.
    assert abs(share - 0.05) <= 0.003


def test_salts_bucket_independently() -> None:
    first, second = in_at("memory-layer", 50), in_at("search-ranking", 50)
    agreement = sum(a == b for a, b in zip(first, second, strict=True)) / KEYS
    # Independent coins agree half the time; sd is 0.16 pp at n = 100,000, ±1 pp is 6 sd.
    # Shared users (same salt) would agree on 100 %.
    assert abs(agreement - 0.5) <= 0.01


def test_small_cohorts_of_two_salts_barely_overlap() -> None:
    first, second = in_at("memory-layer", 5), in_at("search-ranking", 5)
    overlap = sum(a and b for a, b in zip(first, second, strict=True)) / KEYS
    # Independent: 5 % of 5 % = 0.25 %, sd 0.016 pp; the same cohort would be 5 %.
    assert abs(overlap - 0.0025) <= 0.001


def test_buckets_are_stable_across_processes() -> None:
    keys = ["user-1", "user-42", "ünïcødé-🙂", ""]
    script = (
        "import json, sys; from flags.bucketing import bucket; "
        "print(json.dumps([bucket('memory-layer', k) for k in json.loads(sys.argv[1])]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": str(random.randint(1, 2**32 - 1))}
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(keys)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(result.stdout) == [bucket("memory-layer", k) for k in keys]
