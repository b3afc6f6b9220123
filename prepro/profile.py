"""What an artifact's recorded profile says, without reading the data again: the pure
functions behind `prepro report` and `prepro diff` (docs/report.md).

- A vocabulary feature records every distinct token's count only as a count
  distribution (how many tokens occur c times, for every c): sorted, that is the whole
  rank-frequency curve, so coverage at any vocabulary size is exact (`TokenDistribution`).
- A learned Discretization records its values at every 1/steps of the weight
  (`QuantileProfile`): shares below any value, bucket occupancy and histograms are read
  off it, within the sketch's rank error plus one step.
"""

import dataclasses
import math
from typing import Sequence, Tuple

import numpy as np

# A share below this counts as this in the population stability index (an empty bucket
# would make it infinite); the usual floor in credit-risk practice, where PSI comes from.
PSI_FLOOR = 1e-4


@dataclasses.dataclass(frozen=True)
class TokenDistribution:
    """`tokens[i]` distinct tokens occur `counts[i]` times; counts distinct, descending."""
    counts: np.ndarray
    tokens: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "_cumulative_tokens", np.cumsum(self.tokens, dtype=np.int64))
        object.__setattr__(self, "_cumulative_mass", np.cumsum(self.counts * self.tokens, dtype=np.int64))

    @property
    def distinct(self) -> int:
        return int(self._cumulative_tokens[-1]) if len(self.tokens) else 0

    @property
    def occurrences(self) -> int:
        return int(self._cumulative_mass[-1]) if len(self.tokens) else 0

    def top_mass(self, sizes) -> np.ndarray:
        """Occurrences of the `sizes` most frequent tokens (exact, any ties alike)."""
        k = np.clip(np.asarray(sizes, np.int64), 0, self.distinct)
        if not len(self.counts):  # no token at all (an empty vocabulary)
            return np.zeros(k.shape, np.int64)
        group = np.searchsorted(self._cumulative_tokens, k, side="left")
        group = np.minimum(group, len(self.counts) - 1)
        before_tokens = np.where(group > 0, self._cumulative_tokens[group - 1], 0)
        before_mass = np.where(group > 0, self._cumulative_mass[group - 1], 0)
        return np.where(k > 0, before_mass + (k - before_tokens) * self.counts[group], 0)

    def coverage(self, sizes) -> np.ndarray:
        """Share of the occurrences the `sizes` most frequent tokens hold."""
        return self.top_mass(sizes) / max(self.occurrences, 1)

    def count_at_rank(self, ranks) -> np.ndarray:
        """The count of the token at each 1-based rank (by count)."""
        r = np.clip(np.asarray(ranks, np.int64), 1, max(self.distinct, 1))
        if not len(self.counts):
            return np.zeros(r.shape, np.int64)
        return self.counts[np.minimum(np.searchsorted(self._cumulative_tokens, r, side="left"), len(self.counts) - 1)]

    def tokens_with_count_at_least(self, minimum: int) -> int:
        return int(self.tokens[self.counts >= minimum].sum())

    def plot_ranks(self, points: int = 400) -> np.ndarray:
        """About `points` ranks from 1 to `distinct`, evenly spaced on a log scale."""
        return np.unique(np.geomspace(1, max(self.distinct, 1), points).round().astype(np.int64))


@dataclasses.dataclass(frozen=True)
class QuantileProfile:
    """`values[i]`: the smallest value whose cumulative weight reaches i/steps of the total
    (values[0] the minimum, values[-1] the maximum)."""
    values: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.values) - 1

    def share_below(self, x) -> np.ndarray:
        """Share of the weight strictly below each `x` (as Keras buckets: x < boundary),
        linear between profile points: within one step of the truth, plus the profile's
        own rank error."""
        q, steps = self.values, self.steps
        x = np.asarray(x, np.float64)
        k = np.searchsorted(q, x, side="left")  # profile points below x
        inner = np.clip(k, 1, steps)
        low, high = q[inner - 1], q[inner]
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = np.where(high > low, (x - low) / (high - low), 1.0)
        fraction = np.nan_to_num(np.clip(fraction, 0.0, 1.0), nan=0.0)
        share = (inner - 1 + fraction) / steps
        return np.where(k == 0, 0.0, np.where(k > steps, 1.0, share))

    def bucket_shares(self, boundaries: Sequence[float]) -> np.ndarray:
        """Share of the weight in each of Keras's len(boundaries) + 1 buckets
        ([-inf, b0), [b0, b1), ..., [b_last, inf])."""
        below = self.share_below(np.asarray(boundaries, np.float64))
        return np.diff(np.concatenate([[0.0], below, [1.0]]))

    def display_range(self, tail: float = 0.005) -> Tuple[float, float]:
        """The finite range holding all but `tail` of the weight at each end."""
        finite = self.values[np.isfinite(self.values)]
        if not len(finite):
            return 0.0, 1.0
        at = int(round(tail * self.steps))
        q = self.values[at:len(self.values) - at]
        q = q[np.isfinite(q)]
        low, high = (float(q[0]), float(q[-1])) if len(q) else (float(finite[0]), float(finite[-1]))
        if high <= low:  # one value: a narrow window around it
            pad = abs(low) * 0.05 or 0.5
            low, high = low - pad, high + pad
        return low, high

    def histogram(self, bins: int = 60, tail: float = 0.005):
        """(edges, shares) of `bins` equal-width bins over `display_range(tail)`, plus the
        shares below and above that range."""
        low, high = self.display_range(tail)
        edges = np.linspace(low, high, bins + 1)
        below = self.share_below(edges)
        return edges, np.diff(below), float(below[0]), float(1.0 - below[-1])


def population_stability_index(expected: np.ndarray, actual: np.ndarray, floor: float = PSI_FLOOR) -> float:
    """sum((a - e) * ln(a / e)) over buckets, shares floored at `floor`."""
    e = np.maximum(np.asarray(expected, np.float64), floor)
    a = np.maximum(np.asarray(actual, np.float64), floor)
    return float(np.sum((a - e) * np.log(a / e)))


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """The Jensen-Shannon divergence of two distributions over the same outcomes, in bits
    (0 equal, 1 disjoint)."""
    p = np.asarray(p, np.float64) / max(float(np.sum(p)), 1e-300)
    q = np.asarray(q, np.float64) / max(float(np.sum(q)), 1e-300)
    m = (p + q) / 2

    def kl(a):
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / m[nonzero])))
    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


def mean_shift(old_mean, old_variance, new_mean) -> np.ndarray:
    """How far the mean moved, in the old standard deviations (0 where both are constant
    and equal, inf where a constant moved)."""
    old_mean, new_mean = np.asarray(old_mean, np.float64), np.asarray(new_mean, np.float64)
    std = np.sqrt(np.asarray(old_variance, np.float64))
    delta = new_mean - old_mean
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, delta / np.where(std > 0, std, 1.0),
                        np.where(delta == 0, 0.0, np.copysign(math.inf, delta)))
