"""Numeric statistics, mergeable: moments for Normalization, quantiles for Discretization.

Determinism. Floating-point sums are not associative, so a result would depend on
how rows were cut into batches and which worker merged what. Moments are therefore
exact sums (integers), and exact quantiles sort every value with its weight: both
are functions of the multiset of values alone, whatever the order, batching, runner
or source. The quantile sketch cannot be: its compactions depend on what arrived
together, so it takes values in canonical blocks of `BLOCK_ROWS` consecutive values
of one file part, whatever the batch sizes (it carries the remainder of a batch over
to the next), a part's sketch is finished on its own, and parts are merged in part
order (`merge_in_order`); its boundaries are identical for the same files, and
within the recorded rank-error bound for any other arrival of the same rows.

Example:
>>> s = NumericStats.for_moments(width=2)
>>> s.add(np.array([[1.0, 10.0], [3.0, 30.0]]))
>>> s.finish().moments.mean
array([ 2., 20.])
"""

import dataclasses
import math
from fractions import Fraction
from typing import Iterable, List, Optional, Sequence

import numpy as np

from prepro.stats.figures import Figures

BLOCK_ROWS = 1 << 16
# tfx-bsl sizes its sketch for this many values per stream (TensorFlow Transform's
# default); a part of a file holds far fewer.
SKETCH_MAX_ELEMENTS = 1 << 32


# Exact sums of float64 values, as integers: a value is +-mantissa * 2**(position - 1075)
# with its 53-bit mantissa and its position (the biased exponent, at least 1), so
# sum(x) * 2**1075 and sum(x * x) * 2**2150 are integers. NumPy has no exact sum (and
# math.fsum rounds, so partial fsums do not merge exactly), hence this: each chunk's
# mantissas are cut into limbs small enough that np.bincount, which sums in float64,
# sums them per position without rounding; the per-position sums then become Python
# integers. Cost: `python -m bench.run --workloads numeric --docs-scale 0.3` (one
# 8-wide Normalization over 3M rows) takes 7.3-8.4 s, 7.0-7.5 s with float64 merges.
_POSITIONS = 2047
_SCALE = 1075
_CHUNK = 1 << 16  # elements per step: float64 sums of this many limbs below 2**37 stay exact
_CARRY = 1 << 9   # steps whose limb sums (< 2**53 each) an int64 holds before they become ints


def _exact_sums(values: np.ndarray):
    """(n, width) finite float64 -> (sum(x) * 2**1075, sum(x*x) * 2**2150) per column,
    as lists of Python ints."""
    n, width = values.shape
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    columns = np.arange(width, dtype=np.int64)
    size1, size2 = width * _POSITIONS, 2 * width * _POSITIONS
    firsts, seconds = [0] * width, [0] * width
    linear, square = np.zeros((2, size1), np.int64), np.zeros((5, size2), np.int64)
    rows, steps = max(1, _CHUNK // width), 0
    for start in range(0, n, rows):
        chunk = bits[start:start + rows]
        biased = (chunk >> 52) & 0x7FF
        mantissa = (chunk & 0xFFFFFFFFFFFFF) | ((biased != 0).astype(np.int64) << 52)
        position = np.maximum(biased, 1)
        at1 = (position + columns * _POSITIONS).ravel()
        at2 = (2 * position + columns * (2 * _POSITIONS)).ravel()
        signed = np.where(chunk < 0, -mantissa, mantissa).ravel()
        linear[0] += np.bincount(at1, (signed & 0x3FFFFFF).astype(np.float64), size1).astype(np.int64)
        linear[1] += np.bincount(at1, (signed >> 26).astype(np.float64), size1).astype(np.int64)
        # mantissa = a * 2**36 + b * 2**18 + c, so its square is five limbs 18 bits apart.
        mantissa = mantissa.ravel()
        a, b, c = mantissa >> 36, (mantissa >> 18) & 0x3FFFF, mantissa & 0x3FFFF
        for k, limb in enumerate((c * c, 2 * b * c, b * b + 2 * a * c, 2 * a * b, a * a)):
            square[k] += np.bincount(at2, limb.astype(np.float64), size2).astype(np.int64)
        steps += 1
        if steps == _CARRY or start + rows >= n:
            _carry(linear, 26, _POSITIONS, firsts)
            _carry(square, 18, 2 * _POSITIONS, seconds)
            steps = 0
    return firsts, seconds


def _carry(limb_sums: np.ndarray, limb_bits: int, positions: int, out: list) -> None:
    """Adds per-(column, position) limb sums to the Python ints `out`, and zeroes them."""
    for k, sums in enumerate(limb_sums):
        for i in np.flatnonzero(sums).tolist():
            out[i // positions] += int(sums[i]) << (i % positions + limb_bits * k)
        sums[:] = 0


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, correctly rounded (inf beyond float64's range)."""
    try:
        return float(Fraction(numerator, denominator))
    except OverflowError:
        return math.copysign(math.inf, numerator)


@dataclasses.dataclass
class Moments:
    """Population count, and the exact sums of the values and of their squares per
    position (scaled to integers): mean and variance are the float64 nearest the exact
    ones, whatever the order, batching or merging of the values."""
    count: int
    sums: List[int]
    square_sums: List[int]

    @classmethod
    def zero(cls, width: int) -> "Moments":
        return cls(0, [0] * width, [0] * width)

    @classmethod
    def of(cls, values: np.ndarray) -> "Moments":
        """Moments of `values` (observations x positions, finite)."""
        sums, square_sums = _exact_sums(values)
        return cls(len(values), sums, square_sums)

    def merge(self, other: "Moments") -> "Moments":
        return Moments(self.count + other.count, [a + b for a, b in zip(self.sums, other.sums)],
                       [a + b for a, b in zip(self.square_sums, other.square_sums)])

    @property
    def mean(self) -> np.ndarray:
        return np.array([_ratio(s, self.count << _SCALE) for s in self.sums])

    @property
    def variance(self) -> np.ndarray:
        # (n * sum(x^2) - sum(x)^2) / n^2, exactly, then rounded once.
        n = self.count
        return np.array([_ratio(q * n - s * s, (n * n) << (2 * _SCALE))
                         for s, q in zip(self.sums, self.square_sums)])


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

    def to_bytes(self) -> bytes:
        """tfx-bsl's own serialization of the sketch (its C++ state as a protocol
        buffer, not a pickle): what `--keep-state` writes. Call before `boundaries`."""
        return self._sketch.__getstate__()  # (tfx-bsl's pickle support is this serialization)

    @classmethod
    def from_bytes(cls, epsilon: float, data: bytes) -> "QuantileSketch":
        """The sketch of `to_bytes`; a RuntimeError if tfx-bsl cannot parse `data`."""
        from tfx_bsl.sketches import QuantilesSketch
        sketch = QuantilesSketch.__new__(QuantilesSketch)
        sketch.__setstate__(data)
        return cls(epsilon, sketch)

    def boundaries(self, num_bins: int) -> np.ndarray:
        # GetQuantiles(n) gives n + 1 values: the minimum, the n - 1 inner quantiles, the
        # maximum. It finalizes the sketch (no more adds, merges or pickling).
        return np.asarray(self._sketch.GetQuantiles(num_bins).flatten().to_numpy())[1:-1]

    def profile(self, steps: int) -> np.ndarray:
        """The values at cumulative weight 0, 1/steps, ..., 1 (the minimum and maximum
        at the ends), each within `epsilon`; after `boundaries`, which it leaves alone."""
        return np.asarray(self._sketch.GetQuantiles(steps).flatten().to_numpy())

    def __reduce__(self):  # the tfx-bsl sketch pickles itself (serialized C++ state)
        return (QuantileSketch, (self.epsilon, self._sketch))


class ExactQuantiles:
    """Every value (and weight): exact quantiles for data that fits in memory."""

    def __init__(self, values: Sequence[np.ndarray] = (), weights: Sequence[np.ndarray] = ()):
        self._values, self._weights = list(values), list(weights)
        self._sorted = None

    def add(self, values: np.ndarray, weights: Optional[np.ndarray]) -> None:
        # + 0.0 makes -0.0 zero: equal to it, and otherwise which of the two a boundary
        # printed would depend on the order the values came in.
        self._values.append(values + 0.0)
        self._weights.append(np.ones(len(values)) if weights is None else weights)

    def merge(self, other: "ExactQuantiles") -> "ExactQuantiles":
        return ExactQuantiles(self._values + other._values, self._weights + other._weights)

    def distinct(self):
        """(values, weights, counts): each distinct (value, weight) pair with its
        multiplicity, sorted by value then weight; what `--keep-state` writes, and all
        `boundaries` depends on."""
        values = np.concatenate(self._values) if self._values else np.zeros(0)
        weights = np.concatenate(self._weights) if self._weights else np.zeros(0)
        pairs, counts = np.unique(np.stack([values, weights], axis=1), axis=0, return_counts=True)
        return pairs[:, 0].copy(), pairs[:, 1].copy(), counts.astype(np.int64)

    @classmethod
    def from_distinct(cls, values: np.ndarray, weights: np.ndarray, counts: np.ndarray) -> "ExactQuantiles":
        return cls([np.repeat(values, counts)], [np.repeat(weights, counts)])

    def boundaries(self, num_bins: int) -> np.ndarray:
        """For q = i / num_bins, the smallest value whose cumulative weight reaches q of
        the total: with unit weights, the ceil(q * n)-th smallest value (rank error 0).
        Sorted by value then weight, so the cumulative sums do not depend on the order
        the values came in."""
        return self._at_shares(np.arange(1, num_bins) / num_bins)

    def profile(self, steps: int) -> np.ndarray:
        """The values at cumulative weight 0, 1/steps, ..., 1 (exact; the minimum and
        maximum at the ends)."""
        return self._at_shares(np.arange(0, steps + 1) / steps)

    def _at_shares(self, shares: np.ndarray) -> np.ndarray:
        if self._sorted is None:  # (boundaries, then the profile: one sort)
            values = np.concatenate(self._values) if self._values else np.zeros(0)
            weights = np.concatenate(self._weights) if self._weights else np.zeros(0)
            order = np.lexsort((weights, values))
            self._sorted = values[order], np.cumsum(weights[order])
        values, cumulative = self._sorted
        targets = shares * cumulative[-1]
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
    """One feature's statistics over some of its values (then merged with the rest)."""

    def __init__(self, moments: Optional[Moments] = None, quantiles=None):
        self.moments = moments
        self.quantiles = quantiles
        self.counters = Counters()
        self._carry: List[np.ndarray] = []  # sketch values short of a block
        self._carry_weights: List[np.ndarray] = []
        self._carried = 0

    @classmethod
    def for_moments(cls, width: int) -> "NumericStats":
        return cls(moments=Moments.zero(width))

    @classmethod
    def for_quantiles(cls, epsilon: Optional[float]) -> "NumericStats":
        """`epsilon` None: exact quantiles. The moments of the finite values come along
        (exact sums cost ~2% of the sketch's adds): the report and `prepro diff` show
        them, and a mean's shift is measured in their standard deviations."""
        return cls(moments=Moments.zero(1), quantiles=ExactQuantiles() if epsilon is None else QuantileSketch(epsilon))

    def add(self, observations: np.ndarray, weights: Optional[np.ndarray] = None) -> None:
        """`observations`: (n, width) float64 rows (in file order, for the sketch);
        every element is one value, a row's weight applies to each."""
        if self.quantiles is None:
            self.moments = self.moments.merge(Moments.of(observations))
            return
        values = observations.reshape(-1)
        finite = values[np.isfinite(values)]  # Discretization keeps +-inf; its moments do not
        self.moments = self.moments.merge(Moments.of(finite.reshape(-1, 1)))
        weights = None if weights is None else np.repeat(weights, observations.shape[1])
        if isinstance(self.quantiles, ExactQuantiles):
            self.quantiles.add(values, weights)
            return
        self._carry.append(values)
        if weights is not None:
            self._carry_weights.append(weights)
        self._carried += len(values)
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
            self.quantiles.add(values[start:start + BLOCK_ROWS],
                               None if weights is None else weights[start:start + BLOCK_ROWS])
        self._carry = [values[whole:]] if whole < len(values) else []
        self._carry_weights = [weights[whole:]] if weights is not None and whole < len(values) else []
        self._carried = len(values) - whole

    def merge(self, other: "NumericStats") -> "NumericStats":
        assert not self._carried and not other._carried, "finish() parts before merging them"
        merged = NumericStats()
        merged.counters = self.counters.merge(other.counters)
        if self.moments is not None:
            merged.moments = self.moments.merge(other.moments)
        if self.quantiles is not None:
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
