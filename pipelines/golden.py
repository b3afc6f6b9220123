"""Golden rows: a few raw input rows that the artifacts carry with their expected outputs
(see prepro.golden), chosen by their content alone, so the same rows give the same
golden rows whatever the runner, the file order, the batching or the element form
(files read by the CLI, or dicts, Rows or RecordBatches fed to `AnalyzeFeatures`).

A row is a candidate when every source column holds a value JSON can carry (a list
only where a numeric feature declares a shape); repeated rows are one candidate. Its key is a 64-bit hash of its values
as JSON carries them (text as UTF-8, numbers by kind), then its canonical JSON; the job
keeps the rows with the smallest keys. Each batch offers its own smallest `limit` rows
and every row tied with the last of them, so the global choice never depends on how
rows were batched. A hash rather than the values themselves, so golden rows are
typical rows, not the alphabetically first or the most negative ones.
"""

import json
from typing import Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.io import Batch
from prepro.byte_words import ByteWords, high_bytes, low_bytes
from prepro.spec import Spec

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def candidate_rows(batch: Batch, columns: Dict[str, str], spec: Spec, limit: int) -> List[Tuple[int, str]]:
    """(key, canonical JSON) of the batch's `limit` distinct candidate rows of smallest
    key, and of any row tied with the last of them."""
    names = sorted(columns)
    shaped = {f.source for f in spec.features.values() if f.shape}
    table = batch.table.select(names)
    keys, usable = _row_keys(table, names, columns, shaped)
    order = _smallest_first(keys, np.flatnonzero(usable), 4 * limit)
    out: List[Tuple[int, str]] = []
    seen = set()
    step = max(2 * limit, 64)
    for start in range(0, len(order), step):
        chunk = order[start:start + step]
        for index, raw in zip(chunk, table.take(pa.array(chunk, pa.int64())).to_pylist()):
            key = int(keys[index])
            if len(out) >= limit and key != out[-1][0]:
                return out
            row = {c: _plain(raw[c], columns[c]) for c in names}
            if all(v is not None and isinstance(v, list) == (c in shaped) for c, v in row.items()):
                text = canonical_json(row)
                if text not in seen:  # a repeated row is one candidate
                    seen.add(text)
                    out.append((key, text))
    return out


def _smallest_first(keys: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """`rows` ordered by key: the k smallest (and their ties) sorted first, the rest
    after them, sorted only if asked for (a full sort costs ~5 ms per 65,536 rows)."""
    if len(rows) <= k:
        return rows[np.argsort(keys[rows], kind="stable")]
    threshold = np.partition(keys[rows], k - 1)[k - 1]
    low = keys[rows] <= threshold
    head, tail = rows[low], rows[~low]
    head = head[np.argsort(keys[head], kind="stable")]
    return _LazyTail(head, tail, keys)


class _LazyTail:
    """A row order whose sorted tail is computed on first use past the head."""

    def __init__(self, head, tail, keys):
        self._head, self._tail, self._keys, self._sorted = head, tail, keys, None

    def __len__(self):
        return len(self._head) + len(self._tail)

    def __getitem__(self, part: slice):
        if part.stop <= len(self._head):
            return self._head[part]
        if self._sorted is None:
            self._sorted = np.concatenate([self._head, self._tail[np.argsort(self._keys[self._tail], kind="stable")]])
        return self._sorted[part]


def canonical_json(row: Dict) -> str:
    return json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _row_keys(table: pa.Table, names: List[str], columns: Dict[str, str], shaped) -> Tuple[np.ndarray, np.ndarray]:
    """Per row: a hash of its values as JSON carries them, and whether it can be a
    candidate at all (every value present, lists exactly where shaped)."""
    n = table.num_rows
    keys = np.full(n, 0x9E3779B97F4A7C15, np.uint64)
    usable = np.ones(n, bool)
    for name in names:
        column = table.column(name).combine_chunks() if n else pa.array([], pa.null())
        words, present = _column_words(column, columns[name], name in shaped)
        usable &= present
        for word in words:
            keys = _mix(keys ^ word)
    return keys, usable


def _column_words(column: pa.Array, kind: str, shaped: bool) -> Tuple[List[np.ndarray], np.ndarray]:
    """A column's values as uint64 words that decide its part of the key, and where
    they are present. Lists: their length and first element."""
    n = len(column)
    present = ~np.asarray(column.is_null(), bool) if n else np.zeros(0, bool)
    is_list = pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
    if is_list != shaped:
        return [], np.zeros(n, bool)
    if is_list:
        lengths = np.asarray(pc.fill_null(pc.list_value_length(column), 0), np.int64)
        present &= lengths > 0
        if not present.any():
            return [], present
        offsets = np.asarray(column.offsets)[:-1]
        first = column.values.take(pa.array(np.where(present, offsets, 0), pa.int64()))
        words, present_first = _scalar_words(first, kind)
        return [lengths.astype(np.uint64)] + words, present & present_first
    words, present_values = _scalar_words(column, kind)
    return words, present & present_values


def _scalar_words(values: pa.Array, kind: str) -> Tuple[List[np.ndarray], np.ndarray]:
    n = len(values)
    text = pa.types.is_binary(values.type) or pa.types.is_string(values.type) or \
        pa.types.is_large_binary(values.type) or pa.types.is_large_string(values.type)
    if kind == "string" or (kind == "hashable" and text):
        as_bytes = values.cast(pa.large_binary())
        present = np.ones(n, bool) if kind == "string" else \
            np.asarray(pc.fill_null(pc.greater(pc.binary_length(as_bytes), 0), False), bool)
        return _byte_words(as_bytes), present
    if kind == "hashable":
        if not pa.types.is_integer(values.type):
            return [], np.zeros(n, bool)
        return [np.asarray(values.cast(pa.int64()).fill_null(0), np.int64).view(np.uint64)], np.ones(n, bool)
    target = pa.int64() if kind == "int" else pa.float64()
    numbers = _as_numbers(values, target, text)
    if numbers is None:  # not all parse the way pyarrow parses: Python's rules, per value
        scalar = int if kind == "int" else float
        parsed = [_plain(v, kind) for v in values.to_pylist()]
        present = np.array([isinstance(v, scalar) and not isinstance(v, bool) for v in parsed], bool)
        numbers = pa.array([v if ok else 0 for v, ok in zip(parsed, present)], target)
    else:
        present = ~np.asarray(numbers.is_null(), bool) if n else np.zeros(0, bool)
    data = np.asarray(numbers.fill_null(0), np.int64 if kind == "int" else np.float64)
    return [data.view(np.uint64)], present


def _as_numbers(values: pa.Array, target: pa.DataType, text: bool) -> Optional[pa.Array]:
    try:
        if not text:
            return values.cast(target)
        strings = pc.utf8_trim_whitespace(values.cast(pa.large_binary()).cast(pa.large_string()))
        strings = pc.if_else(pc.equal(pc.utf8_length(strings), 0), pa.scalar(None, pa.large_string()), strings)
        return strings.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _byte_words(values: pa.Array) -> List[np.ndarray]:
    """Length, first 8 and last 8 bytes of each value (of a large_binary array): a
    key costs O(rows), not a pass over every byte; rows that tie on it are ordered by
    their canonical JSON. The 8 bytes are little-endian words; a value shorter than 8
    bytes has zeros after its bytes in the first word and before them in the last."""
    words = ByteWords(values)
    starts, lengths = words.starts, words.lengths
    heads = words.word(starts) & low_bytes(lengths)
    tails = words.word(starts + lengths - 8) & high_bytes(lengths)
    return [lengths.astype(np.uint64), heads, tails]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit moves every output bit."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _plain(value, kind: str):
    """A raw value as JSON carries it, or None if it is missing or cannot be carried."""
    if isinstance(value, list):
        items = [_plain(v, kind) for v in value]
        return None if not items or any(v is None for v in items) else items
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if kind == "float":
        try:
            return float(value)
        except ValueError:
            return None
    if kind == "int" and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    if isinstance(value, str) and value == "" and kind != "string":
        return None
    return value
