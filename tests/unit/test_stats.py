"""The gates' statistics against published values and against brute force."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.core.stats import mann_whitney, newcombe, quantile, ranks, wilson


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857-872, table I, method 3 (Wilson score).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
        # The gate's default: a clean group of 100 clears a 95% floor.
        (100, 100, 0.9630, 1.0000),
    ],
)
def test_wilson_matches_published_intervals(successes, n, low, high):
    got = wilson(successes, n)
    assert got == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize(
    ("s1", "n1", "s2", "n2", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10.
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
    ],
)
def test_newcombe_matches_published_intervals(s1, n1, s2, n2, low, high):
    d, lo, hi = newcombe(s1, n1, s2, n2)
    assert d == pytest.approx(s1 / n1 - s2 / n2)
    assert (lo, hi) == pytest.approx((low, high), abs=5e-5)


@given(st.integers(1, 2000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_holds_the_point_estimate_inside_zero_and_one(case):
    s, n = case
    low, high = wilson(s, n)
    assert 0 <= low <= s / n <= high <= 1


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_one_more_success_never_lowers_the_lower_bound(case):
    s, n = case
    assert wilson(s + 1, n + 1)[0] >= wilson(s, n)[0]


samples = st.lists(st.integers(0, 12).map(float), min_size=1, max_size=9)


@given(samples, samples)
def test_u_equals_the_pair_count_done_by_brute_force(x, y):
    """U counts pairs in which x is larger, ties as half; U_x + U_y = n_x * n_y."""
    pairs = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(x, y))
    test = mann_whitney(x, y)
    assert test.u == pytest.approx(pairs)
    assert test.u + mann_whitney(y, x).u == pytest.approx(len(x) * len(y))
    assert test.effect == pytest.approx(pairs / (len(x) * len(y)))
    assert 0 <= test.p_greater <= 1
    assert 0 <= test.p_less <= 1


def test_u_test_separates_samples_that_do_not_overlap():
    """n = 10 + 10 without overlap: U = 0, z = -(50 - 0.5) / sqrt(175) (continuity-corrected)."""
    test = mann_whitney([float(v) for v in range(10)], [float(v) for v in range(10, 20)])
    assert test.u == 0
    expected = 0.5 * math.erfc((49.5 / math.sqrt(175)) / math.sqrt(2))
    assert test.p_less == pytest.approx(expected)
    assert test.p_less < 1e-3 < 0.999 < test.p_greater


def test_u_test_of_identical_samples_tells_nothing():
    test = mann_whitney([3.0] * 5, [3.0] * 7)
    assert (test.effect, test.p_greater, test.p_less) == (0.5, 1.0, 1.0)


def test_u_test_needs_two_samples():
    with pytest.raises(ValueError, match="both samples"):
        mann_whitney([], [1.0])


def test_ranks_share_the_mean_rank_among_ties():
    assert ranks([10.0, 20.0, 10.0, 30.0]) == ([1.5, 3.0, 1.5, 4.0], [2, 1, 1])


@pytest.mark.parametrize(("q", "expected"), [(0.0, 1.0), (0.5, 2.5), (0.95, 3.85), (1.0, 4.0)])
def test_quantile_interpolates(q, expected):
    assert quantile([1.0, 2.0, 3.0, 4.0], q) == pytest.approx(expected)
