"""Normalization's moments are exact: the float64 nearest the true mean and variance
of the values, and the same bits however the values are ordered, batched or merged
(what lets a PCollection with no order give the CLI's artifact). Checked against
exact rational arithmetic (fractions), not against another float algorithm."""

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st

from prepro.stats.numeric import Moments, NumericStats

finite = st.floats(allow_nan=False, allow_infinity=False, width=64).filter(lambda x: abs(x) < 3.4e38)


def exact(values: np.ndarray):
    n = len(values)
    mean = [sum(map(Fraction, column.tolist())) / n for column in values.T]
    variance = [sum((Fraction(v) - m) ** 2 for v in column.tolist()) / n for column, m in zip(values.T, mean)]
    return [float(m) for m in mean], [float(v) for v in variance]


def moments_in_pieces(values: np.ndarray, cuts, order) -> Moments:
    """Moments of `values` reordered by `order`, added in pieces cut at `cuts`, the
    pieces merged in reverse."""
    shuffled = values[order]
    pieces = np.split(shuffled, sorted(set(c % (len(values) + 1) for c in cuts)))
    parts = [Moments.of(piece) if len(piece) else Moments.zero(values.shape[1]) for piece in pieces]
    total = Moments.zero(values.shape[1])
    for part in reversed(parts):
        total = part.merge(total)
    return total


@given(st.lists(st.lists(finite, min_size=3, max_size=3), min_size=1, max_size=60),
       st.lists(st.integers(0, 60), max_size=5), st.randoms(use_true_random=False))
def test_moments_are_exact_and_independent_of_order_and_batching(rows, cuts, random):
    values = np.array(rows, dtype=np.float64)
    order = list(range(len(values)))
    random.shuffle(order)
    whole, pieces = Moments.of(values), moments_in_pieces(values, cuts, order)
    mean, variance = exact(values)
    assert whole.mean.tolist() == mean and whole.variance.tolist() == variance
    assert pieces.mean.tobytes() == whole.mean.tobytes()
    assert pieces.variance.tobytes() == whole.variance.tobytes()


@pytest.mark.parametrize("name, values", [
    ("large mean, tiny spread", np.random.default_rng(1).normal(1e6, 1e-3, (2000, 1))),
    ("subnormals and extremes", np.array([[3e38], [-3e38], [5e-324], [0.0], [-2.5e-310], [-0.0]])),
    ("heavy tails, many columns", np.random.default_rng(2).standard_cauchy((3000, 5))),
    # More elements than one float64 partial sum of limbs holds exactly (2**16).
    ("more values than a partial sum holds", np.random.default_rng(3).normal(3, 2, (40_000, 2))),
])
def test_moments_match_exact_arithmetic(name, values):
    moments = Moments.of(values)
    mean, variance = exact(values)
    assert moments.mean.tolist() == mean and moments.variance.tolist() == variance, name
    reversed_moments = Moments.of(values[::-1].copy())
    assert moments.variance.tobytes() == reversed_moments.variance.tobytes()


def test_numeric_stats_moments_merge_across_parts_in_any_order():
    values = np.random.default_rng(4).normal(-7, 3, (50_000, 2))
    parts = []
    for piece in np.array_split(values, 7):
        stats = NumericStats.for_moments(2)
        for batch in np.array_split(piece, 3):
            stats.add(batch)
        parts.append(stats.finish())
    forward, backward = parts[0], parts[-1]
    for p in parts[1:]:
        forward = forward.merge(p)
    for p in reversed(parts[:-1]):
        backward = backward.merge(p)
    assert forward.moments.mean.tobytes() == backward.moments.mean.tobytes()
    assert forward.moments.variance.tobytes() == backward.moments.variance.tobytes()
    assert forward.moments.count == 50_000


def test_limb_sums_carried_midway_stay_exact(monkeypatch):
    # A real job carries the int64 limb sums into Python ints every 512 steps (33M
    # values); carrying every 2 steps here runs that path on a small input.
    import prepro.stats.numeric as numeric
    values = np.random.default_rng(5).normal(-2, 9, (150_000, 1))
    carried_rarely = Moments.of(values)
    monkeypatch.setattr(numeric, "_CARRY", 2)
    carried_often = Moments.of(values)
    assert carried_often.sums == carried_rarely.sums and carried_often.square_sums == carried_rarely.square_sums
    mean, variance = exact(values)
    assert carried_often.mean.tolist() == mean and carried_often.variance.tolist() == variance


def test_an_empty_batch_adds_nothing():
    # A batch whose rows were all skipped (missing, NaN) reaches the moments empty.
    stats = NumericStats.for_moments(3)
    stats.add(np.zeros((0, 3)))
    assert Moments.of(np.zeros((0, 3))) == Moments.zero(3)
    stats.add(np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    stats.add(np.zeros((0, 3)))
    moments = stats.finish().moments
    assert moments.count == 2 and moments.mean.tolist() == [2.0, 2.0, 2.0] and moments.variance.tolist() == [1.0, 0.0, 1.0]
