"""One batch of rows -> each feature's tokens, with Keras's rules and prepro's input policy.

Policy (docs/artifact-format.md): a null or absent value is skipped and counted as
`missing`. A list value contributes each element (each string is one document for
TextVectorization). A string that is not UTF-8 follows the feature's `invalid_utf8`:
"error" names the file and row, "replace" decodes with U+FFFD, "skip" drops it; both
are counted. An IntegerLookup value that is not a decimal int64 is an error.
"""

import dataclasses
from typing import Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import InputError
from pipelines.io import Batch
from prepro import text
from prepro.spec import FeatureSpec, needs_document_frequencies
from prepro.stats import TokenCounts


@dataclasses.dataclass
class Tally:
    """Per-feature row figures, mergeable by addition."""
    rows: int = 0
    values: int = 0
    missing: int = 0
    invalid_utf8_replaced: int = 0
    invalid_utf8_skipped: int = 0

    def merge(self, other: "Tally") -> "Tally":
        return Tally(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


def feature_values(batch: Batch, feature: FeatureSpec) -> Tuple[pa.Array, np.ndarray, Tally]:
    """The feature's values (binary or int64), each value's 1-based file row, and figures."""
    column = batch.table[feature.source].combine_chunks()
    rows = np.arange(batch.first_row, batch.first_row + len(column), dtype=np.int64)
    tally = Tally(rows=len(column))
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        tally.missing += column.null_count
        rows = rows[pc.list_parent_indices(column).to_numpy()]
        column = pc.list_flatten(column)
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
    tally.missing += int((~valid).sum())
    column, rows = column.filter(pa.array(valid)), rows[valid]
    if feature.is_integer:
        column = _as_int64(column, rows, batch.path, feature.name)
    else:
        column, rows = _as_utf8(column, rows, batch.path, feature, tally)
    tally.values = len(column)
    return column, rows, tally


def feature_counts(batch: Batch, feature: FeatureSpec) -> Tuple[TokenCounts, Tally]:
    values, _, tally = feature_values(batch, feature)
    with_doc_counts = needs_document_frequencies(feature)
    if feature.is_text:
        return text_counts(values, feature.options, with_doc_counts), tally
    doc_ids = np.arange(len(values), dtype=np.int64)
    return TokenCounts.from_tokens(doc_ids, values, len(values), with_doc_counts), tally


def text_counts(docs: pa.Array, options: dict, with_doc_counts: bool) -> TokenCounts:
    """TextVectorization's token (n-gram) counts for one batch of documents."""
    doc_ids, tokens = text.unigrams(docs, options)
    if text.widths_never_collide(options) and len(tokens):
        encoded = pc.dictionary_encode(tokens)
        counts = TokenCounts.from_ngram_ids(
            doc_ids, encoded.indices.to_numpy(), encoded.dictionary, text.ngram_widths(options["ngrams"]),
            len(docs), with_doc_counts)
        if counts is not None:
            return counts
    doc_ids, tokens = text.ngrams((doc_ids, tokens), options["ngrams"])
    return TokenCounts.from_tokens(doc_ids, tokens, len(docs), with_doc_counts)


def _as_utf8(column, rows, path, feature, tally):
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type):
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
                raise InputError(f"value is not valid UTF-8 ({e.reason} at byte {e.start}: {v[:40]!r}); "
                                 f"set invalid_utf8: replace or skip in the spec to accept it",
                                 path=path, row=int(rows[i]), feature=feature.name) from None
            if feature.invalid_utf8 == "replace":
                values[i] = v.decode("utf-8", "replace").encode("utf-8")
                tally.invalid_utf8_replaced += 1
            else:
                keep[i] = False
                tally.invalid_utf8_skipped += 1
    return pa.array([v for v, k in zip(values, keep) if k], pa.binary()), rows[keep]


def _as_int64(column, rows, path, name):
    if pa.types.is_integer(column.type):
        return column.cast(pa.int64())
    if not (pa.types.is_binary(column.type) or pa.types.is_string(column.type)):
        raise InputError(f"holds {column.type} values; IntegerLookup needs integers", path=path,
                         row=int(rows[0]) if len(rows) else None, feature=name)
    strings = column.cast(pa.binary()).view(pa.string()) if pa.types.is_binary(column.type) else column
    ok = pc.match_substring_regex(strings, r"^\s*[+-]?[0-9]+\s*$").to_numpy(zero_copy_only=False)
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise InputError(f"value {column[i].as_py()!r} is not an integer", path=path,
                         row=int(rows[i]), feature=name)
    try:
        return pc.cast(pc.utf8_trim_whitespace(strings), pa.int64())
    except pa.ArrowInvalid as e:
        raise InputError(f"integer out of int64 range: {e}", path=path, feature=name) from None
