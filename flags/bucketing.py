"""Per-user consistent bucketing, identical to flagd's ``fractional`` operator.

A user's bucket depends only on ``salt + targeting_key``, so the same user lands in
the same bucket in the server, in every SDK and after a restart; widening a percentage
only ever adds users.
"""

from __future__ import annotations

from collections.abc import Sequence

import mmh3

from flags.model import SplitArm

BUCKETS = 10_000  # hundredths of a percent: 0.01 % resolution


def bucket(salt: str, targeting_key: str) -> int:
    """The user's bucket in 0..9999."""
    # Multiply-and-shift rather than modulo: it is flagd's v2 formula, and it maps the
    # hash range evenly onto the buckets without modulo bias.
    return (mmh3.hash(salt + targeting_key, 0, False) * BUCKETS) >> 32


def percent_to_units(percent: float) -> int:
    """``percent`` in hundredths of a percent, clamped to 0..10000."""
    # Written as comparisons so NaN and infinities clamp instead of raising in round().
    if not percent > 0:
        return 0
    if percent >= 100:
        return BUCKETS
    return round(percent * 100)


def hash_limit(units: int) -> int:
    """The smallest unsigned hash whose bucket is not below ``units``.

    ``bucket < units`` exactly when ``mmh3_u32 < hash_limit(units)``: ``(h * 10000) >> 32
    < u`` is ``h * 10000 < u * 2**32``, and for a whole ``h`` that is ``h < ceil(u *
    2**32 / 10000)``. A compiled rollout compares the raw hash with this, saving the
    multiply and shift per evaluation without moving any user.
    """
    return -(-(units << 32) // BUCKETS)


def is_in(bucket: int, percent: float) -> bool:
    """Whether a user in ``bucket`` gets the new side at ``percent``."""
    return bucket < percent_to_units(percent)


def pick_arm(bucket: int, arms: Sequence[SplitArm]) -> str:
    """The arm whose cumulative weight range holds ``bucket``."""
    upper = 0
    for arm in arms:
        upper += arm.weight
        if bucket < upper:
            return arm.variant
    # Weights sum to 10000, so only a malformed split gets here; the last arm keeps the
    # answer defined rather than failing the request.
    return arms[-1].variant
