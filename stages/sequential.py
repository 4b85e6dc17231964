"""An anytime-valid confidence sequence for the difference of two event rates.

The controller looks at a canary every interval, for days. A fixed-horizon test (a z-test
at 95 %) looked at that often rolls back almost every healthy canary sooner or later; a
confidence sequence holds the true difference at every look at once, so the chance that
it *ever* excludes the truth stays within its budget ``alpha``, however often it is read.

The boundary is the normal mixture (Robbins 1970; Howard, Ramdas, McAuliffe and Sekhon
2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences", eq. 14; the
mixture SPRT of Johari, Koomen, Pekelis and Walsh 2017 is the same statistic). For a sum
``S`` of increments with drift ``theta`` per unit of information ``V`` (here: ``S =
W - delta * V`` with ``W = sum I_k * estimate_k``, ``V = sum I_k``, the inverse-variance
weights of the segments), mixing ``exp(lambda*S - lambda^2 V / 2)`` over
``lambda ~ N(0, tau^2)`` gives the test martingale

    M(S, V) = (1 + tau^2 V)^(-1/2) * exp(tau^2 S^2 / (2 (1 + tau^2 V)))

and by Ville's inequality ``P(ever M >= 1/alpha) <= alpha``. A few ``tau`` averaged (each a
martingale, so their mean is one) keep both small and large effects quick to see: the
smallest is the margin, the largest sixteen times more.

Pure: numbers in, numbers out; ``math`` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Mixture scales, as multiples of the effect size of interest (the margin).
TAU_MULTIPLES: tuple[float, ...] = (1.0, 4.0, 16.0)
_BISECT_STEPS = 80
_NEWTON_STEPS = 30


@dataclass(frozen=True, slots=True)
class Interval:
    low: float
    high: float

    @property
    def center(self) -> float:
        return (self.low + self.high) / 2


def taus(scale: float) -> tuple[float, ...]:
    """The mixture's ``tau`` values for an effect of interest of ``scale`` (> 0)."""
    return tuple(scale * k for k in TAU_MULTIPLES)


def log_mean_exp(terms: Sequence[float], count: int) -> float:
    """``log(sum(exp(terms)) / count)`` without overflow; terms left out count as 0."""
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms) / count)


def log_mixture(s: float, v: float, scales: Sequence[float]) -> float:
    """log M(S, V), averaged over the mixture scales."""
    return _log_mixture_and_slope(s, v, scales)[0]


def _single_boundary(v: float, alpha: float, tau: float) -> float:
    """The closed form for one ``tau``: ``M = 1/alpha`` solved for ``|S|``."""
    rho = tau * tau
    return math.sqrt((1 + rho * v) / rho * (2 * math.log(1 / alpha) + math.log1p(rho * v)))


def boundary(v: float, alpha: float, scales: Sequence[float]) -> float:
    """The ``|S|`` at which the mixture M reaches ``1/alpha`` after information ``v``.

    The mean of J martingales is at least each one over J and at most the largest, so
    the boundary lies between the smallest single boundary at ``alpha`` and the smallest
    at ``alpha / J``: a short bisection between the two closed forms."""
    if v <= 0:
        return math.inf
    target = math.log(1 / alpha)
    low = min(_single_boundary(v, alpha, tau) for tau in scales)
    high = min(_single_boundary(v, alpha / len(scales), tau) for tau in scales)
    # log M is convex and increasing in |S|: Newton from the upper bound comes down to
    # the root monotonically, never past it.
    s = high
    for _ in range(_NEWTON_STEPS):
        value, slope = _log_mixture_and_slope(s, v, scales)
        if value - target <= 1e-9 or slope <= 0:
            break
        s = max(low, s - (value - target) / slope)
    return s


def _log_mixture_and_slope(s: float, v: float, scales: Sequence[float]) -> tuple[float, float]:
    terms = []
    slopes = []
    for tau in scales:
        rho = tau * tau
        terms.append(-0.5 * math.log1p(rho * v) + rho * s * s / (2 * (1 + rho * v)))
        slopes.append(rho * s / (1 + rho * v))
    top = max(terms)
    weights = [math.exp(t - top) for t in terms]
    total = sum(weights)
    value = top + math.log(total / len(terms))
    slope = sum(w * d for w, d in zip(weights, slopes, strict=True)) / total
    return value, slope


def confidence_sequence(
    weighted: float, information: float, alpha: float, scales: Sequence[float]
) -> Interval:
    """The interval for the difference after ``information`` (``V``) with weighted sum
    ``weighted`` (``W``): ``W/V +- b(V)/V``. Unbounded while there is no information."""
    if information <= 0:
        return Interval(-math.inf, math.inf)
    center = weighted / information
    half = boundary(information, alpha, scales) / information
    return Interval(center - half, center + half)


def information_needed(
    distance: float, information: float, alpha: float, scales: Sequence[float]
) -> float | None:
    """About the total information at which the half-width shrinks to ``distance``:
    where an estimate that stays where it is gets decided. From the upper closed-form
    bound of the boundary, so it errs on the side of more. None when ``distance`` is 0
    (an estimate sitting on the margin is never decided)."""
    if distance <= 0 or not math.isfinite(distance):
        return None

    def half_width(v: float) -> float:
        return min(_single_boundary(v, alpha / len(scales), tau) for tau in scales) / v

    low = high = max(information, 1.0)
    if half_width(high) <= distance:
        return information
    while half_width(high) > distance:
        low, high = high, high * 2
        if high > 1e30:
            return None
    for _ in range(_BISECT_STEPS):
        if high - low <= 1e-3 * high:  # "about": a tenth of a per cent is plenty
            break
        mid = (low + high) / 2
        if half_width(mid) > distance:
            low = mid
        else:
            high = mid
    return high


def chi_square_p(observed: Sequence[float], expected: Sequence[float]) -> float:
    """The p-value of Pearson's chi-square with ``len - 1`` degrees of freedom, for the
    two-cell case the sample-ratio check needs (1 degree: ``erfc(sqrt(x/2))``)."""
    if len(observed) != 2 or len(expected) != 2:
        raise ValueError("two cells: new and old")
    statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True) if e > 0)
    return math.erfc(math.sqrt(statistic / 2))
