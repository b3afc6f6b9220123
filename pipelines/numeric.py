"""One batch of rows -> a numeric feature's values, with prepro's input policy.

Policy (docs/artifact-format.md):
- a null or empty value in any of the feature's columns skips the row, counted `missing`;
- NaN elements are skipped, counted `nan` (Normalization skips the whole row);
- +-inf, and values beyond float32's range (where Keras computes): Discretization keeps
  them (they have a rank), counted `infinite`; Normalization stops with an error naming
  the row (a mean would be infinite);
- text that is not a number, a list whose length does not match the declared shape,
  a negative or non-finite weight (or one beyond float32's range): an error naming the
  feature, the file and the row;
- a row with weight 0 is skipped, counted `zero_weight`.
"""

from typing import Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import InputError
from pipelines.extract import decoded, is_string_like
from pipelines.io import Batch
from prepro.spec import FeatureSpec, normalization_axes
from prepro.stats.numeric import Counters, NumericStats

_NUMBER = r"(?i)^\s*[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)(e[+-]?[0-9]+)?|nan|inf|infinity)\s*$"


def new_stats(feature: FeatureSpec) -> NumericStats:
    if feature.layer == "Normalization":
        shape = (1, *feature.element_shape)
        width = int(np.prod([shape[a] for a in normalization_axes(feature)], dtype=np.int64))
        return NumericStats.for_moments(width)
    exact = feature.quantiles == "exact"
    return NumericStats.for_quantiles(None if exact else feature.rank_error)


def add_batch(stats: NumericStats, batch: Batch, feature: FeatureSpec) -> None:
    """Adds one batch's values to `stats` (in file order: see prepro.stats.numeric)."""
    values, weights, counters = feature_numbers(batch, feature)
    stats.counters = stats.counters.merge(counters)
    if feature.layer == "Normalization":
        stats.add(observations(values, normalization_axes(feature)))
    elif feature.options["num_bins"] is not None:
        stats.add(values, weights)


def observations(values: np.ndarray, kept_axes: Tuple[int, ...]) -> np.ndarray:
    """(n, *shape) rows -> (observations, positions): each kept-axes position is one
    column, every other axis (the batch axis included) gives observations, as Keras
    reduces them."""
    kept = [a for a in kept_axes]
    moved = np.moveaxis(values, kept, list(range(values.ndim - len(kept), values.ndim)))
    width = int(np.prod([values.shape[a] for a in kept], dtype=np.int64)) if kept else 1
    return moved.reshape(-1, width)


def feature_numbers(batch: Batch, feature: FeatureSpec) -> Tuple[np.ndarray, Optional[np.ndarray], Counters]:
    """The rows kept, as float64 (n, *element_shape), their weights, and the counters."""
    n = batch.table.num_rows
    rows = np.arange(batch.first_row, batch.first_row + n, dtype=np.int64)
    counters = Counters(rows=n)
    size = int(np.prod(feature.element_shape))
    columns, present = [], np.ones(n, bool)
    for source in feature.sources:
        values, valid = _column_values(batch, source, feature, rows, size if feature.shape else 1)
        columns.append(values)
        present &= valid
    weights = None
    if feature.weight is not None:
        weights, valid = _column_values(batch, feature.weight, feature, rows, 1)
        weights = weights[:, 0]
        present &= valid
    counters.missing = int((~present).sum())
    values = np.concatenate(columns, axis=1)[present].reshape((-1, *feature.element_shape))
    rows = rows[present]
    if weights is not None:
        weights = weights[present]
        # Within float32's range, so no sum of them (at most 2**63 rows) overflows float64.
        with np.errstate(over="ignore"):
            bad = ~np.isfinite(weights.astype(np.float32)) | (weights < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"weight column '{feature.weight}' holds {weights[i]!r}; weights must be "
                             f"finite (within float32's range) and >= 0", path=batch.path, row=int(rows[i]),
                             feature=feature.name)
        zero = weights == 0
        counters.zero_weight = int(zero.sum())
        values, weights, rows = values[~zero], weights[~zero], rows[~zero]
    flat = values.reshape(len(values), size)  # explicit width: a batch may keep no rows
    # Keras computes in float32: a value beyond its range is infinite there (and its
    # square would overflow the float64 moments).
    with np.errstate(over="ignore"):
        as_float32 = flat.astype(np.float32)
    nan = np.isnan(flat)
    infinite = np.isinf(as_float32)
    counters.nan = int(nan.sum())
    counters.infinite = int(infinite.sum())
    if feature.layer == "Normalization":
        if counters.infinite:
            i = int(np.flatnonzero(infinite.any(axis=1))[0])
            raise InputError("value is infinite (in float32, as Keras computes); Normalization needs finite "
                             "values (NaN and missing values are skipped and counted)", path=batch.path,
                             row=int(rows[i]), feature=feature.name)
        keep = ~nan.any(axis=1)
        values, weights = values[keep], None
    else:
        # Discretization is elementwise: NaN elements drop out, the rest of the row stays.
        # Keras compares in float32, so quantiles are taken of the float32 values.
        values = as_float32.astype(np.float64)
        if counters.nan:
            keep = ~nan.reshape(-1)
            row_weights = None if weights is None else np.repeat(weights, flat.shape[1])[keep]
            values, weights = values.reshape(-1)[keep].reshape(-1, 1), row_weights
    counters.values = int(values.size)
    return values, weights, counters


def _column_values(batch: Batch, source: str, feature: FeatureSpec, rows: np.ndarray,
                   size: int) -> Tuple[np.ndarray, np.ndarray]:
    """One column as float64 (n, size) and a per-row present mask."""
    column = decoded(batch.table[source].combine_chunks())
    n = len(column)
    is_list = pa.types.is_list(column.type) or pa.types.is_large_list(column.type) \
        or pa.types.is_fixed_size_list(column.type)
    if is_list:
        present = pc.is_valid(column).to_numpy(zero_copy_only=False)
        lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        wrong = present & (lengths != size)
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            expected = f"shape {list(feature.shape)} ({size} values)" if feature.shape else "one value"
            raise InputError(f"column '{source}' holds {int(lengths[i])} values in this row; the spec "
                             f"declares {expected}", path=batch.path, row=int(rows[i]), feature=feature.name)
        flat = pc.list_flatten(column.filter(pa.array(present)))
        numbers = _as_float64(flat, source, feature, batch.path,
                              np.repeat(rows[present], size))
        out = np.full((n, size), np.nan)
        out[present] = numbers.reshape(-1, size)
        return out, present
    if size != 1:
        raise InputError(f"column '{source}' holds scalars; the spec declares shape {list(feature.shape)}",
                         path=batch.path, row=int(rows[0]) if n else None, feature=feature.name)
    if is_string_like(column.type):
        # CSV and text cells arrive as bytes: an empty cell is a missing value.
        column = column.cast(pa.binary()) if not pa.types.is_binary(column.type) else column
        present = pc.and_(pc.is_valid(column), pc.not_equal(pc.binary_length(column), 0))
        present = present.fill_null(False).to_numpy(zero_copy_only=False)
    else:
        present = pc.is_valid(column).to_numpy(zero_copy_only=False)
    numbers = np.full(n, np.nan)
    numbers[present] = _as_float64(column.filter(pa.array(present)), source, feature, batch.path, rows[present])
    return numbers.reshape(n, 1), present


def _as_float64(values: pa.Array, source: str, feature: FeatureSpec, path: str, rows: np.ndarray) -> np.ndarray:
    values = decoded(values)
    if pa.types.is_boolean(values.type):
        raise InputError(f"column '{source}' holds booleans; {feature.layer} needs numbers",
                         path=path, row=int(rows[0]) if len(rows) else None, feature=feature.name)
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_decimal(values.type) \
            or pa.types.is_null(values.type):
        # Unsafe: integers beyond 2**53 round to the nearest float64, as their text would.
        return values.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    if not is_string_like(values.type):
        raise InputError(f"column '{source}' holds {values.type} values; {feature.layer} needs numbers",
                         path=path, row=int(rows[0]) if len(rows) else None, feature=feature.name)
    strings = values.cast(pa.binary()).view(pa.string()) if not pa.types.is_string(values.type) else values
    try:
        strings.validate(full=True)
        # A null element inside a list is fine here (a NaN element: see the policy).
        ok = pc.match_substring_regex(strings, _NUMBER).fill_null(True).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        ok = np.array([v is None or _is_number(v) for v in values.cast(pa.binary()).to_pylist()])
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise InputError(f"column '{source}': {values[i].as_py()!r} is not a number",
                         path=path, row=int(rows[i]), feature=feature.name)
    return pc.cast(pc.utf8_trim_whitespace(strings), pa.float64()).to_numpy(zero_copy_only=False)


def _is_number(raw: bytes) -> bool:
    try:
        float(raw.decode("utf-8"))
        return True
    except (UnicodeDecodeError, ValueError):
        return False
