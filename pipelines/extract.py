"""One batch of rows -> each feature's tokens, with Keras's rules and prepro's input policy.

Policy (docs/artifact-format.md): a null or absent value is skipped and counted as
`missing`. A list value contributes each element (each string is one document for
TextVectorization). A string that is not UTF-8 follows the feature's `invalid_utf8`:
"error" names the file and row, "replace" decodes with U+FFFD, "skip" drops it; both
are counted. An IntegerLookup value that is not a decimal int64 is an error.
"""

import collections
import dataclasses
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import InputError
from pipelines.io import INT64_RANGE, Batch
from prepro import text
from prepro.spec import FeatureSpec, needs_document_frequencies
from prepro.stats import Figures, TokenCounts
from prepro.stats.counts import MAX_WEIGHT, NgramKeyCounts


@dataclasses.dataclass
class Tally(Figures):
    """Per-feature row figures of a token feature."""
    rows: int = 0
    values: int = 0
    missing: int = 0
    invalid_utf8_replaced: int = 0
    invalid_utf8_skipped: int = 0
    zero_weight: int = 0  # rows whose weight is 0, skipped (weighted features)


class Threads:
    """A pool of `count` threads for the work of one DoFn instance, which owns it
    (created in `setup`, shut down in `teardown`); `SERIAL` runs in the caller."""

    def __init__(self, count: int = 1):
        self.count = max(1, count)
        self._pool = ThreadPoolExecutor(self.count, thread_name_prefix="prepro-extract") if self.count > 1 else None

    def map(self, function, items) -> list:
        """[function(item) for item in items], results (and the first exception) in item order."""
        items = list(items)
        if self._pool is None or len(items) <= 1:
            return [function(item) for item in items]
        return list(self._pool.map(function, items))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


SERIAL = Threads(1)


def counts_whole_batches(spec) -> bool:
    """Whether a worker's threads count whole batches, one each and several at once
    (`counted_ahead`), rather than each batch cut into parts across them (`text_counts`).

    Whole batches when no feature counts n-grams or numeric statistics: a batch's counts
    then end in serial steps (one dictionary for its parts, merging into the pending
    counts) that leave a core idle. On 2 cores the 4M-document unigram job took 13.5 s in
    8 MB batches counted whole, 16.7 s in 64 MB ones cut into parts. Distinct n-grams
    repeat little, so they are best counted over one big batch, as int64 keys, before
    any string is built (the 1M-document bigram tf-idf job: 17.3 s in 64 MB batches cut
    into parts, 29.5 s in 8 MB ones counted whole); numeric statistics add one batch at
    a time in file order, in the caller's thread."""
    return not any(f.is_numeric or (f.is_text and max(text.ngram_widths(f.options.get("ngrams"))) > 1)
                   for f in spec.features.values())


def counted_ahead(count: Callable, items: Iterable, ahead: int) -> Iterator[tuple]:
    """(item, count(item)) for each item in order, with `count` running on up to `ahead`
    items at once in threads of their own while the caller uses the previous result
    (0: in the caller's thread). An exception from `count` is raised in item order; a
    caller that stops early waits for the counts under way and starts no others."""
    if ahead < 1:
        for item in items:
            yield item, count(item)
        return
    pending: collections.deque = collections.deque()
    with ThreadPoolExecutor(ahead, thread_name_prefix="prepro-count") as pool:
        try:
            for item in items:
                pending.append((item, pool.submit(count, item)))
                if len(pending) > ahead:
                    item, future = pending.popleft()
                    yield item, future.result()
            while pending:
                item, future = pending.popleft()
                yield item, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def feature_values(batch: Batch, feature: FeatureSpec) -> Tuple[pa.Array, np.ndarray, Tally]:
    """The feature's values (binary or int64), each value's 1-based file row, and figures."""
    column = batch.table[feature.source].combine_chunks()
    rows = np.arange(batch.first_row, batch.first_row + len(column), dtype=np.int64)
    tally = Tally(rows=len(column))
    if is_list_column(column):
        tally.missing += column.null_count
        rows = rows[pc.list_parent_indices(column).to_numpy()]
        column = pc.list_flatten(column)
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
    tally.missing += int((~valid).sum())
    column, rows = decoded(column.filter(pa.array(valid))), rows[valid]
    if feature.value_kind == "int" or (feature.value_kind == "hashable" and pa.types.is_integer(column.type)):
        column = _as_int64(column, rows, batch.path, feature)
    else:
        column, rows = _as_utf8(column, rows, batch.path, feature, tally)
    tally.values = len(column)
    return column, rows, tally


def is_list_column(column: pa.Array) -> bool:
    return pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or \
        pa.types.is_fixed_size_list(column.type)


def feature_counts(batch: Batch, feature: FeatureSpec, threads: Threads = SERIAL) -> Tuple[TokenCounts, Tally]:
    values, rows, tally = feature_values(batch, feature)
    with_doc_counts = needs_document_frequencies(feature)
    present = pc.is_valid(batch.table[feature.source]).to_numpy(zero_copy_only=False)
    weights = None
    if feature.weight is not None:
        row_weights = _row_weights(batch, feature, present, tally)
        kept = ~np.isnan(row_weights[rows - batch.first_row])
        values, rows, weights = values.filter(pa.array(kept)), rows[kept], row_weights[rows[kept] - batch.first_row]
        tally.values, present = len(values), present & ~np.isnan(row_weights)
    if feature.is_text:
        return text_counts(values, feature.options, with_doc_counts, threads, weights), tally
    # A lookup's document is a row, as adapt() counts it for tf_idf (a scalar is a
    # one-token document, a list row a document of its elements; an empty list is an
    # empty document). A null row is missing, not a document; a value dropped by
    # invalid_utf8 "skip" leaves its row a document.
    documents = int(present.sum())
    doc_ids = np.unique(rows, return_inverse=True)[1].astype(np.int64, copy=False)
    return TokenCounts.from_tokens(doc_ids, values, documents, with_doc_counts, weights), tally


def _row_weights(batch: Batch, feature: FeatureSpec, present: np.ndarray, tally: Tally) -> np.ndarray:
    """Each row's weight (float64), NaN for a row left out: a null weight (the row is
    missing) or a weight of 0 (counted `zero_weight`). A weight that is negative, not
    finite or above MAX_WEIGHT is an error naming the row."""
    from pipelines.numeric import _column_values  # (numeric imports this module)
    rows = np.arange(batch.first_row, batch.first_row + batch.table.num_rows, dtype=np.int64)
    weights, valid = _column_values(batch, feature.weight, feature, rows, 1)
    weights = weights[:, 0]
    bad = valid & ~((weights >= 0) & (weights <= MAX_WEIGHT))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"weight column '{feature.weight}' holds {float(weights[i])!r}; weights must be numbers in "
                         f"[0, {MAX_WEIGHT:g}]", path=batch.path, row=int(rows[i]), feature=feature.name)
    tally.missing += int((present & ~valid).sum())
    zero = valid & present & (weights == 0)
    tally.zero_weight += int(zero.sum())
    return np.where(valid & ~zero, weights, np.nan)


def text_counts(docs: pa.Array, options: dict, with_doc_counts: bool, threads: Threads = SERIAL,
                weights: Optional[np.ndarray] = None) -> TokenCounts:
    """TextVectorization's token (n-gram) counts for one batch of documents.

    With several threads, the batch is cut into two parts per thread (at least
    `PART_BYTES` of text each), tokenized (in cache-sized pieces) and counted in
    `threads` threads (Arrow and numpy release the GIL: 2 threads on 2 cores count a
    263 MB batch 2.5x faster than one loop), then merged: as int64 n-gram keys over one
    unified dictionary when widths never collide,
    else as string counts. With `weights` (one per document), string counts weighted by
    their document's weight.
    """
    parts = [docs] if threads.count == 1 else _parts(docs, max(PART_BYTES, _text_bytes(docs) // (2 * threads.count)))
    tokenized = threads.map(lambda part: _unigrams(part, options), parts)
    if weights is not None:
        starts = np.cumsum([0] + [len(part) for part in parts])

        def weighted(i):
            doc_ids, tokens = text.ngrams(tokenized[i], options["ngrams"])
            return TokenCounts.from_tokens(doc_ids, tokens, len(parts[i]), with_doc_counts,
                                           weights[starts[i] + np.asarray(doc_ids, np.int64)])
        return functools.reduce(TokenCounts.merge, threads.map(weighted, range(len(parts))))
    if text.widths_never_collide(options) and any(len(t) for _, t in tokenized):
        encoded = threads.map(lambda item: pc.dictionary_encode(item[1]), tokenized)
        # One dictionary for all parts (Arrow remaps each part's indices to it).
        unified = pa.chunked_array(encoded, encoded[0].type).unify_dictionaries().chunks
        dictionary = unified[0].dictionary
        widths = text.ngram_widths(options["ngrams"])
        keys = threads.map(lambda i: NgramKeyCounts.count(
            tokenized[i][0], unified[i].indices.to_numpy(), len(dictionary), widths, len(parts[i]),
            with_doc_counts), range(len(parts)))
        if all(k is not None for k in keys):
            return NgramKeyCounts.merged(keys).to_token_counts(dictionary, text.NGRAM_SEPARATOR)
    counts = threads.map(lambda i: TokenCounts.from_tokens(
        *text.ngrams(tokenized[i], options["ngrams"]), len(parts[i]), with_doc_counts),
        range(len(parts)))
    return functools.reduce(TokenCounts.merge, counts)


# Text per part at least: enough work per thread task. Not more parts than two per
# thread: each part's distinct tokens are unified into one dictionary in the caller's
# thread, and the Zipf tail makes that grow with the number of parts (a 64 MB batch:
# 0.23 s in 16 parts, 0.07 s in 4; the parts' own encoding costs the same).
PART_BYTES = 4 << 20


def _unigrams(docs: pa.Array, options: dict) -> text.Tokens:
    """text.unigrams of `docs`, run on pieces of PART_BYTES and joined: the byte masks
    of standardize and split stay in cache there (split costs 3.5 CPU s per GB in 4 MB
    pieces, 25 in 64 MB ones)."""
    pieces = _parts(docs, PART_BYTES)
    if len(pieces) == 1:
        return text.unigrams(docs, options)
    tokenized = [text.unigrams(piece, options) for piece in pieces]
    first_docs = np.cumsum([0] + [len(piece) for piece in pieces[:-1]])
    return (np.concatenate([ids + first for (ids, _), first in zip(tokenized, first_docs)]),
            pa.concat_arrays([tokens for _, tokens in tokenized]))


def _text_bytes(docs: pa.Array) -> int:
    offsets = np.frombuffer(docs.buffers()[1], np.int32)[docs.offset:docs.offset + len(docs) + 1] if len(docs) else [0]
    return int(offsets[-1]) - int(offsets[0])


def _parts(docs: pa.Array, part_bytes: int) -> List[pa.Array]:
    """Consecutive slices of about `part_bytes` of text each (whole documents)."""
    if len(docs) == 0:
        return [docs]
    offsets = np.frombuffer(docs.buffers()[1], np.int32)[docs.offset:docs.offset + len(docs) + 1]
    targets = np.arange(offsets[0], offsets[-1], part_bytes)[1:]
    cuts = [0, *np.unique(np.searchsorted(offsets, targets)).tolist(), len(docs)]
    return [docs.slice(a, b - a) for a, b in zip(cuts, cuts[1:]) if b > a]


def _as_utf8(column, rows, path, feature, tally):
    if pa.types.is_null(column.type):  # a null-typed column: every value was missing
        return pa.array([], pa.binary()), rows
    if not is_string_like(column.type):
        raise InputError(f"column '{feature.source}' holds {column.type} values; {feature.layer} "
                         f"needs strings", path=path, row=int(rows[0]) if len(rows) else None,
                         feature=feature.name)
    column = column.cast(pa.binary()) if not pa.types.is_binary(column.type) else column
    try:
        column.view(pa.string()).validate(full=True)
        return column, rows
    except pa.ArrowInvalid:
        pass
    # Rare path: find the invalid values in Python and apply the policy.
    values = column.to_pylist()
    keep = np.ones(len(values), bool)
    for i, v in enumerate(values):
        try:
            v.decode("utf-8")
        except UnicodeDecodeError as e:
            if feature.invalid_utf8 == "error":
                raise InputError(f"value is not valid UTF-8 ({e.reason} at byte {e.start}{_surrogate_hint(v, e)}: "
                                 f"{v[:40]!r}); set invalid_utf8: replace or skip in the spec to accept it",
                                 path=path, row=int(rows[i]), feature=feature.name) from None
            if feature.invalid_utf8 == "replace":
                values[i] = v.decode("utf-8", "replace").encode("utf-8")
                tally.invalid_utf8_replaced += 1
            else:
                keep[i] = False
                tally.invalid_utf8_skipped += 1
    return pa.array([v for v, k in zip(values, keep) if k], pa.binary()), rows[keep]


def _surrogate_hint(value: bytes, error: UnicodeDecodeError) -> str:
    # ED A0..BF xx is a UTF-16 surrogate written as UTF-8: in JSON Lines, an escape
    # such as "\ud800" that is not half of a pair.
    at = value[error.start:error.start + 2]
    return ", a lone UTF-16 surrogate such as the JSON escape \\ud800" \
        if len(at) == 2 and at[0] == 0xED and at[1] >= 0xA0 else ""


def is_string_like(arrow_type: pa.DataType) -> bool:
    return (pa.types.is_binary(arrow_type) or pa.types.is_string(arrow_type)
            or pa.types.is_large_binary(arrow_type) or pa.types.is_large_string(arrow_type)
            or pa.types.is_fixed_size_binary(arrow_type)
            or pa.types.is_binary_view(arrow_type) or pa.types.is_string_view(arrow_type))


def decoded(column: pa.Array) -> pa.Array:
    """A dictionary-encoded column (Parquet categoricals) as its plain values."""
    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def _as_int64(column, rows, path, feature):
    name = feature.name
    if pa.types.is_null(column.type):  # a null-typed column: every value was missing
        return pa.array([], pa.int64())
    if pa.types.is_integer(column.type):
        if pa.types.is_uint64(column.type):
            too_big = pc.greater(column, pa.scalar(INT64_RANGE.stop - 1, pa.uint64()))
            too_big = too_big.to_numpy(zero_copy_only=False)
            if too_big.any():
                i = int(np.flatnonzero(too_big)[0])
                raise InputError(f"column '{feature.source}': {column[i].as_py()} is outside the int64 "
                                 f"range {feature.layer} takes", path=path, row=int(rows[i]), feature=name)
        return column.cast(pa.int64())
    if not is_string_like(column.type):
        raise InputError(f"column '{feature.source}' holds {column.type} values; {feature.layer} needs integers",
                         path=path, row=int(rows[0]) if len(rows) else None, feature=name)
    strings = column.cast(pa.binary()).view(pa.string()) if not pa.types.is_string(column.type) else column
    ok = pc.match_substring_regex(strings, r"^\s*[+-]?[0-9]+\s*$").to_numpy(zero_copy_only=False)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise InputError(f"column '{feature.source}': {column[i].as_py()!r} is not an integer", path=path,
                         row=int(rows[i]), feature=name)
    digits = pc.replace_substring_regex(pc.utf8_trim_whitespace(strings), r"^\+", "")  # Arrow refuses "+7"
    try:
        return pc.cast(digits, pa.int64())
    except pa.ArrowInvalid as e:
        # Every value is digits, so only the range can fail: find the first value outside it.
        outside = [i for i, v in enumerate(digits.to_pylist()) if int(v) not in INT64_RANGE][:1]
        raise InputError(f"column '{feature.source}': " + (f"{digits[outside[0]].as_py()!r} is outside the int64 "
                         f"range" if outside else str(e)), path=path,
                         row=int(rows[outside[0]]) if outside else None, feature=name) from None
