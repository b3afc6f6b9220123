"""Exact moments: the true mean and variance rounded once, whatever the order or the
cut into batches (prepro/stats/moments.py), checked against rational arithmetic."""

from fractions import Fraction

import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from prepro.stats.moments import CHUNK, Moments

# Normalization refuses values beyond float32's range; subnormals and signed zeros stay.
FINITE = st.floats(min_value=-3.4e38, max_value=3.4e38, allow_nan=False, allow_infinity=False)


def exact(column):
    values = [Fraction(v) for v in column]
    n, total = len(values), sum(values)
    return float(total / n), float((n * sum(v * v for v in values) - total * total) / (n * n))


@settings(max_examples=200)
@given(hnp.arrays(np.float64, st.tuples(st.integers(1, 40), st.integers(1, 3)), elements=FINITE),
       st.integers(1, 7), st.randoms(use_true_random=False))
def test_moments_are_the_exact_values_rounded_once_in_any_order(values, cut, rng):
    moments = Moments.of(values)
    for position in range(values.shape[1]):
        assert (moments.mean[position], moments.variance[position]) == exact(values[:, position])
    order = list(range(len(values)))
    rng.shuffle(order)
    shuffled = values[order]
    parts = [Moments.of(shuffled[i:i + cut]) for i in range(0, len(values), cut)]
    rng.shuffle(parts)
    merged = Moments.empty(values.shape[1])
    for part in parts:
        merged = part.merge(merged)
    assert merged == moments


def test_hostile_columns():
    """Large offsets (float32-hostile), one exponent per column and many, subnormals,
    zeros only, more rows than one chunk."""
    rng = np.random.default_rng(5)
    columns = [10_000 + rng.normal(0, 1, CHUNK + 17), rng.pareto(1.5, 3000) * 1e30,
               np.full(500, 5e-324), np.zeros(70), np.full(CHUNK * 2 + 1, -7.25)]
    for column in columns:
        moments = Moments.of(column.reshape(-1, 1))
        assert (moments.mean[0], moments.variance[0]) == exact(column)
    assert Moments.of(np.full((9, 1), -7.25)).variance[0] == 0.0
