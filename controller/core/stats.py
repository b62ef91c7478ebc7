"""The statistics the rollout gates rest on, written out so that no numerical library is needed at
run time: the Wilson score interval of a proportion, Newcombe's interval for the difference of two
proportions, the Mann-Whitney U rank test with its effect size, and quantiles. Pure: numbers in,
numbers out; no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# The two-sided 95% point of the standard normal distribution.
Z95 = 1.959963984540054


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of ``successes`` out of ``n`` (``n`` >= 1).

    Unlike the normal approximation it stays inside [0, 1] and is honest at 0 or n successes:
    100 successes out of 100 give a lower bound of 96.3%, not 100%.
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"wilson: {successes} successes out of {n} is not a proportion")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # Rounding must not put the observed share outside its own interval (at 0 or n successes).
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def newcombe(s1: int, n1: int, s2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """The difference of two proportions ``s1/n1 - s2/n2`` and its 95% interval, from the two
    Wilson intervals (Newcombe 1998, method 10): no pooled variance, so it behaves at 0% and 100%."""
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson(s1, n1, z)
    l2, u2 = wilson(s2, n2, z)
    d = p1 - p2
    return d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def normal_sf(x: float) -> float:
    """P(Z > x) for a standard normal Z."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))


@dataclass(frozen=True, slots=True)
class RankTest:
    """A Mann-Whitney U test of sample ``x`` against sample ``y``.

    ``u`` counts the pairs (one from each sample) in which x is the larger, ties as half a pair;
    ``effect`` is that share of all pairs (the probability of superiority: 0.5 when neither sample
    tends to be larger). ``p_greater`` and ``p_less`` are one-sided p-values (normal approximation
    with tie and continuity corrections) that x tends to be larger, respectively smaller, than y.
    """

    u: float
    n_x: int
    n_y: int
    effect: float
    p_greater: float
    p_less: float


def ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Ranks from 1 of ``values``, ties sharing their mean rank, and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1
        for k in range(i, j + 1):
            out[order[k]] = mean_rank
        ties.append(j - i + 1)
        i = j + 1
    return out, ties


def mann_whitney(x: Sequence[float], y: Sequence[float]) -> RankTest:
    """The Mann-Whitney U test of ``x`` against ``y`` (both non-empty)."""
    n_x, n_y = len(x), len(y)
    if not n_x or not n_y:
        raise ValueError("mann_whitney: both samples need at least one value")
    r, ties = ranks([*x, *y])
    u = sum(r[:n_x]) - n_x * (n_x + 1) / 2
    n = n_x + n_y
    mean = n_x * n_y / 2
    tie_term = sum(t**3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    variance = n_x * n_y / 12 * ((n + 1) - tie_term)
    if variance <= 0:  # every value equal: nothing tells the samples apart
        return RankTest(u, n_x, n_y, 0.5, 1.0, 1.0)
    sd = math.sqrt(variance)
    p_greater = normal_sf((u - mean - 0.5) / sd)
    p_less = normal_sf((mean - u - 0.5) / sd)
    return RankTest(u, n_x, n_y, u / (n_x * n_y), min(1.0, p_greater), min(1.0, p_less))


def quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted, non-empty values, interpolating between neighbours."""
    if not ordered:
        raise ValueError("quantile of no values")
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
