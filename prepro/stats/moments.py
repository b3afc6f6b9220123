"""Normalization's moments, exact: sums that merge in any order to the same bits.

A float64 sum depends on the order of its additions, so moments merged with Chan's
formula depend on how rows were cut into batches and which worker merged what. Here
each position's sum of values and sum of squares are kept as exact integers (scaled by
a fixed power of two), so merging is integer addition: commutative, associative, the
same whatever the runner, the batching or the order of the rows. The mean and the
population variance are then computed exactly and rounded once to float64, which is
also at least as accurate as any float64 summation adapt() does.

How a batch is summed exactly without a Python loop per value (why not `math.fsum`: it
is one position at a time, a Python call per value, and gives no mergeable state):
`np.frexp` writes x = M * 2**(e - 53) with M an integer of at most 53 bits; M is cut
into three int64 pieces of at most 18 bits, and the pieces (and, for the squares, their
pairwise products, at most 37 bits) are summed per (position, exponent): with int64
sums where a column has one exponent (the common case), else with `np.bincount`, whose
float64 additions are exact while a chunk holds at most 2**16 values
(2**16 * 2**37 = 2**53). Only the few (position, exponent) totals become Python integers.
"""

import dataclasses
from fractions import Fraction
from typing import Tuple

import numpy as np

# x = M * 2**(e - 53) with -1073 <= e <= 1024 (subnormals included); the scales make
# every term an integer: x * 2**SUM_SHIFT and x**2 * 2**SQUARE_SHIFT.
_MIN_EXPONENT, _EXPONENTS = -1073, 2098
SUM_SHIFT = 53 - _MIN_EXPONENT          # 1126
SQUARE_SHIFT = 2 * SUM_SHIFT
CHUNK = 1 << 16                         # values per bincount: keeps its float64 sums exact
_PIECE = 18                             # bits per piece of M


@dataclasses.dataclass(frozen=True)
class Moments:
    """Per position: the count, and the exact sums of values and of squares."""
    count: int
    sums: Tuple[int, ...]      # sum of x, times 2**SUM_SHIFT
    squares: Tuple[int, ...]   # sum of x**2, times 2**SQUARE_SHIFT

    @classmethod
    def empty(cls, width: int) -> "Moments":
        return cls(0, (0,) * width, (0,) * width)

    @classmethod
    def of(cls, values: np.ndarray) -> "Moments":
        """Moments of finite `values`, shaped (observations, positions)."""
        values = np.asarray(values, np.float64)
        result = cls.empty(values.shape[1])
        for start in range(0, len(values), CHUNK):
            result = result.merge(_summarize(values[start:start + CHUNK]))
        return result

    def merge(self, other: "Moments") -> "Moments":
        return Moments(self.count + other.count,
                       tuple(a + b for a, b in zip(self.sums, other.sums)),
                       tuple(a + b for a, b in zip(self.squares, other.squares)))

    @property
    def mean(self) -> np.ndarray:
        """Each position's mean, correctly rounded to float64."""
        if not self.count:
            return np.zeros(len(self.sums))
        return np.array([float(Fraction(s, self.count << SUM_SHIFT)) for s in self.sums])

    @property
    def variance(self) -> np.ndarray:
        """Each position's population variance (ddof 0), computed exactly as
        (n * sum(x**2) - sum(x)**2) / n**2, correctly rounded to float64."""
        if not self.count:
            return np.zeros(len(self.sums))
        n = self.count
        return np.array([float(Fraction(n * q - s * s, (n * n) << SQUARE_SHIFT))
                         for s, q in zip(self.sums, self.squares)])


def _summarize(values: np.ndarray) -> Moments:
    """Exact moments of at most CHUNK observations (see the module docstring)."""
    n, width = values.shape
    whole, exponents = _decompose(values)
    # M = a * 2**36 + b * 2**18 + c, with b and c in [0, 2**18) and |a| <= 2**17.
    rest = whole & ((1 << 2 * _PIECE) - 1)
    a, b, c = whole >> 2 * _PIECE, rest >> _PIECE, rest & ((1 << _PIECE) - 1)
    # M**2 = a**2 * 2**72 + 2ab * 2**54 + (2ac + b**2) * 2**36 + 2bc * 2**18 + c**2
    pieces, products = (a, b, c), (a * a, 2 * a * b, 2 * a * c + b * b, 2 * b * c, c * c)
    sums, squares = [0] * width, [0] * width
    for position, exponent, piece_sums, product_sums in _grouped(exponents, pieces, products):
        total = sum(s << (2 * _PIECE - k * _PIECE) for k, s in enumerate(piece_sums))
        sums[position] += total << (exponent - 53 + SUM_SHIFT)
        total = sum(s << (4 * _PIECE - k * _PIECE) for k, s in enumerate(product_sums))
        squares[position] += total << (2 * exponent - 106 + SQUARE_SHIFT)
    return Moments(n, tuple(sums), tuple(squares))


def _decompose(values: np.ndarray):
    """(M, e) with x = M * 2**(e - 53) exactly, M a signed integer of at most 53 bits,
    read from the IEEE 754 bits (faster than np.frexp). Zeros take their column's
    largest exponent (they add nothing), which keeps a column on one exponent."""
    bits = np.ascontiguousarray(values, np.float64).view(np.int64)
    field = (bits >> 52) & 0x7FF
    fraction = bits & ((1 << 52) - 1)
    normal = field > 0
    magnitude = np.where(normal, fraction | (1 << 52), fraction)
    exponents = np.where(normal, field, 1) - 1022          # frexp's exponent
    whole = np.where(bits < 0, -magnitude, magnitude)
    return whole, np.where(whole == 0, exponents.max(axis=0), exponents)


def _grouped(exponents: np.ndarray, pieces, products):
    """(position, exponent, piece sums, product sums) per (position, exponent) used, as
    Python ints. The int64 sums are exact (at most 2**16 terms of at most 37 bits), and
    so are bincount's float64 ones (below 2**53)."""
    width = exponents.shape[1]
    if (exponents == exponents[:1]).all():  # the common case: one exponent per column
        for position in range(width):
            yield (position, int(exponents[0, position]),
                   [int(p[:, position].sum()) for p in pieces], [int(p[:, position].sum()) for p in products])
        return
    bins = (np.arange(width) * _EXPONENTS + (exponents - _MIN_EXPONENT)).ravel()
    size = width * _EXPONENTS
    used = np.flatnonzero(np.bincount(bins, minlength=size))
    piece_sums = [np.bincount(bins, weights=p.ravel(), minlength=size)[used] for p in pieces]
    product_sums = [np.bincount(bins, weights=p.ravel(), minlength=size)[used] for p in products]
    for i, bin_index in enumerate(used.tolist()):
        position, exponent = divmod(bin_index, _EXPONENTS)
        yield (position, exponent + _MIN_EXPONENT,
               [int(s[i]) for s in piece_sums], [int(s[i]) for s in product_sums])
