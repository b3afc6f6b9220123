"""Numeric statistics, mergeable: moments for Normalization, quantiles for Discretization.

Determinism. Floating-point merges are not associative, so a result would depend on
how rows were cut into batches and which worker merged what. So a `NumericStats`
takes values in canonical blocks of `BLOCK_ROWS` consecutive observations of one
file part, whatever the batch sizes (it carries the remainder of a batch over to the
next); a part's stats are finished on their own; and parts are merged in part order
(`merge_in_order`). The same input then gives the same bits on any runner and any
number of workers.

Example:
>>> s = NumericStats.for_moments(width=2)
>>> s.add(np.array([[1.0, 10.0], [3.0, 30.0]]))
>>> s.finish().moments.mean
array([ 2., 20.])
"""

import dataclasses
from typing import Iterable, List, Optional, Sequence

import numpy as np

from prepro.stats.figures import Figures

BLOCK_ROWS = 1 << 16
# tfx-bsl sizes its sketch for this many values per stream (TensorFlow Transform's
# default); a part of a file holds far fewer.
SKETCH_MAX_ELEMENTS = 1 << 32


@dataclasses.dataclass
class Moments:
    """Population count, mean and sum of squared deviations per position, in float64."""
    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> "Moments":
        """Moments of `values` (observations x positions), two-pass within the block."""
        mean = values.mean(axis=0)
        return cls(len(values), mean, ((values - mean) ** 2).sum(axis=0))

    def merge(self, other: "Moments") -> "Moments":
        """Chan et al.'s parallel combination: stable for any sizes."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + delta ** 2 * (self.count * other.count / n)
        return Moments(n, mean, m2)

    @property
    def variance(self) -> np.ndarray:
        return self.m2 / self.count


class QuantileSketch:
    """tfx-bsl's weighted quantiles sketch (TensorFlow's boosted-trees summary, in C++):
    mergeable, deterministic rank error at most `epsilon` of the total weight at any
    scale and any partitioning, weights supported. Chosen over a randomized sketch (KLL)
    because its guarantee is deterministic, and it is what TensorFlow Transform uses.

    A file part's sketch is compacted before it leaves its worker (`compact`: ~3x
    smaller in memory and on the wire, so a job's memory stays flat with its number of
    parts); tfx-bsl documents that compaction costs a third of the bound, so the
    sketch is built with 2/3 of `epsilon` and `epsilon` is still guaranteed."""

    COMPACTION_MARGIN = 2 / 3

    def __init__(self, epsilon: float, sketch=None):
        from tfx_bsl.sketches import QuantilesSketch
        self.epsilon = epsilon
        self._sketch = sketch if sketch is not None else \
            QuantilesSketch(epsilon * self.COMPACTION_MARGIN, SKETCH_MAX_ELEMENTS, 1)

    def compact(self) -> None:
        self._sketch.Compact()

    def add(self, values: np.ndarray, weights: Optional[np.ndarray]) -> None:
        import pyarrow as pa
        if weights is None:
            self._sketch.AddValues(pa.array(values, pa.float64()))
        else:
            self._sketch.AddValues(pa.array(values, pa.float64()), pa.array(weights, pa.float64()))

    def merge(self, other: "QuantileSketch") -> "QuantileSketch":
        self._sketch.Merge(other._sketch)
        return self

    def boundaries(self, num_bins: int) -> np.ndarray:
        # GetQuantiles(n) gives n + 1 values: the minimum, the n - 1 inner quantiles, the
        # maximum. It finalizes the sketch (no more adds, merges or pickling).
        return np.asarray(self._sketch.GetQuantiles(num_bins).flatten().to_numpy())[1:-1]

    def __reduce__(self):  # the tfx-bsl sketch pickles itself (serialized C++ state)
        return (QuantileSketch, (self.epsilon, self._sketch))


class ExactQuantiles:
    """Every value (and weight): exact quantiles for data that fits in memory."""

    def __init__(self, values: Sequence[np.ndarray] = (), weights: Sequence[np.ndarray] = ()):
        self._values, self._weights = list(values), list(weights)

    def add(self, values: np.ndarray, weights: Optional[np.ndarray]) -> None:
        self._values.append(values)
        self._weights.append(np.ones(len(values)) if weights is None else weights)

    def merge(self, other: "ExactQuantiles") -> "ExactQuantiles":
        return ExactQuantiles(self._values + other._values, self._weights + other._weights)

    def boundaries(self, num_bins: int) -> np.ndarray:
        """For q = i / num_bins, the smallest value whose cumulative weight reaches q of
        the total: with unit weights, the ceil(q * n)-th smallest value (rank error 0)."""
        values = np.concatenate(self._values) if self._values else np.zeros(0)
        weights = np.concatenate(self._weights) if self._weights else np.zeros(0)
        order = np.argsort(values, kind="stable")
        values, cumulative = values[order], np.cumsum(weights[order])
        targets = np.arange(1, num_bins) / num_bins * cumulative[-1]
        return values[np.minimum(np.searchsorted(cumulative, targets, side="left"), len(values) - 1)]


@dataclasses.dataclass
class Counters(Figures):
    rows: int = 0        # rows read
    values: int = 0      # finite values used (elements, for vector features)
    missing: int = 0     # null or empty values, skipped
    nan: int = 0         # NaN elements, skipped
    infinite: int = 0    # +-inf elements (Discretization keeps them; Normalization refuses them)
    zero_weight: int = 0  # rows whose weight is 0, skipped


class NumericStats:
    """One feature's statistics over one file part (then merged over parts)."""

    def __init__(self, moments: Optional[Moments] = None, quantiles=None):
        self.moments = moments
        self.quantiles = quantiles
        self.counters = Counters()
        self._carry: List[np.ndarray] = []
        self._carry_weights: List[np.ndarray] = []
        self._carried = 0

    @classmethod
    def for_moments(cls, width: int) -> "NumericStats":
        return cls(moments=Moments(0, np.zeros(width), np.zeros(width)))

    @classmethod
    def for_quantiles(cls, epsilon: Optional[float]) -> "NumericStats":
        """`epsilon` None: exact quantiles."""
        return cls(quantiles=ExactQuantiles() if epsilon is None else QuantileSketch(epsilon))

    def add(self, observations: np.ndarray, weights: Optional[np.ndarray] = None) -> None:
        """`observations`: (n, width) float64 rows, in file order."""
        self._carry.append(observations)
        if weights is not None:
            self._carry_weights.append(weights)
        self._carried += len(observations)
        if self._carried >= BLOCK_ROWS:
            self._flush(final=False)

    def finish(self) -> "NumericStats":
        self._flush(final=True)
        if isinstance(self.quantiles, QuantileSketch):
            self.quantiles.compact()
        return self

    def _flush(self, final: bool) -> None:
        if not self._carried:
            return
        values = np.concatenate(self._carry)
        weights = np.concatenate(self._carry_weights) if self._carry_weights else None
        whole = len(values) if final else len(values) // BLOCK_ROWS * BLOCK_ROWS
        for start in range(0, whole, BLOCK_ROWS):
            block = values[start:start + BLOCK_ROWS]
            block_weights = None if weights is None else weights[start:start + BLOCK_ROWS]
            if self.moments is not None:
                self.moments = self.moments.merge(Moments.of(block))
            else:  # every element is one value; a row's weight applies to each
                self.quantiles.add(block.reshape(-1), None if block_weights is None
                                   else np.repeat(block_weights, block.shape[1]))
        self._carry = [values[whole:]] if whole < len(values) else []
        self._carry_weights = [weights[whole:]] if weights is not None and whole < len(values) else []
        self._carried = len(values) - whole

    def merge(self, other: "NumericStats") -> "NumericStats":
        assert not self._carried and not other._carried, "finish() parts before merging them"
        merged = NumericStats()
        merged.counters = self.counters.merge(other.counters)
        if self.moments is not None:
            merged.moments = self.moments.merge(other.moments)
        else:
            merged.quantiles = self.quantiles.merge(other.quantiles)
        return merged


def rank_error(values: np.ndarray, boundaries: Sequence[float], num_bins: int) -> float:
    """The worst rank error of quantile `boundaries` over `values`, as a fraction of the
    rows: the largest distance between boundary i's rank interval [#(x < b), #(x <= b)] / n
    and its target i / num_bins. Compared in float32, as Keras's Discretization compares.

    Example:
    >>> rank_error(np.arange(100.0), [25.0, 50.0, 75.0], 4)
    0.0
    """
    x = np.sort(np.asarray(values).astype(np.float32))
    b = np.asarray(boundaries, np.float32)
    low = np.searchsorted(x, b, side="left") / len(x)
    high = np.searchsorted(x, b, side="right") / len(x)
    targets = np.arange(1, num_bins) / num_bins
    return float(np.max(np.maximum(0, np.maximum(low - targets, targets - high)), initial=0.0))


def merge_in_order(parts: Iterable[tuple]) -> NumericStats:
    """Merges finished (part key, stats) pairs in part-key order: a canonical result."""
    ordered = [stats for _, stats in sorted(parts, key=lambda p: p[0])]
    result = ordered[0]
    for stats in ordered[1:]:
        result = result.merge(stats)
    return result
