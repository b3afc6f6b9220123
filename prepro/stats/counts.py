"""Exact token counts: occurrences, document frequencies and totals, mergeable.

A `TokenCounts` holds a table of distinct tokens (binary or int64) with their
occurrence count and document frequency, plus totals; a weighted one (a feature with a
`weight` column) also each token's sum of weights, `weight`, as a decimal with
WEIGHT_DIGITS places: each weight is rounded to them once, then sums are exact, so
they merge in any order to the same value (floats would not). Tables are merged lazily:
pending tables are concatenated and re-aggregated with Arrow's hash group-by (C++)
once they grow, so merging many small partial counts costs little Python.
"""

from typing import List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prepro import vocab
from prepro.byte_words import ByteWords, high_bytes, low_bytes
from prepro.text import window_starts

_COMPACT_ROWS = 1 << 20  # re-aggregate pending tables past at least this many rows
WEIGHT_DIGITS = 9
# 38 digits, 9 after the point: a sum of up to 2**63 weights below MAX_WEIGHT (the job
# refuses larger ones) fits in the 29 before it.
WEIGHT_TYPE = pa.decimal128(38, WEIGHT_DIGITS)
MAX_WEIGHT = 1e10


def _schema(token_type: pa.DataType, weighted: bool = False) -> pa.Schema:
    fields = [("token", token_type), ("count", pa.int64()), ("doc_count", pa.int64())]
    return pa.schema(fields + ([("weight", WEIGHT_TYPE)] if weighted else []))


def as_weights(values: np.ndarray) -> pa.Array:
    """Float weights as WEIGHT_TYPE decimals, rounded to WEIGHT_DIGITS places."""
    return pa.array(np.round(np.asarray(values, np.float64), WEIGHT_DIGITS)).cast(WEIGHT_TYPE, safe=False)


class TokenCounts:
    """Counts of tokens over documents.

    Example:
    >>> c = TokenCounts.from_tokens(np.array([0, 0, 1]), pa.array([b"a", b"a", b"b"]), 2)
    >>> c.merge(c).table().to_pydict()["count"]
    [4, 2]
    """

    def __init__(self, token_type: pa.DataType, tables: Sequence[pa.Table] = (),
                 documents: int = 0, occurrences: int = 0, weighted: bool = False):
        self.token_type = token_type
        self.weighted = weighted
        self._tables: List[pa.Table] = list(tables)
        self._pending_rows = sum(t.num_rows for t in self._tables)
        self.documents = documents        # rows (documents) seen, empty ones included
        self.occurrences = occurrences    # token occurrences seen

    @classmethod
    def empty(cls, token_type: pa.DataType, weighted: bool = False) -> "TokenCounts":
        return cls(token_type, weighted=weighted)

    @classmethod
    def from_tokens(cls, doc_ids: np.ndarray, tokens: pa.Array, documents: int,
                    with_doc_counts: bool = True, weights: Optional[np.ndarray] = None) -> "TokenCounts":
        """Counts one batch: `tokens[i]` occurred in document `doc_ids[i]` (with weight
        `weights[i]`, for a weighted count).

        Without `with_doc_counts`, `doc_count` is left 0 (it costs a second group-by).
        """
        token_type, weighted = tokens.type, weights is not None
        if len(tokens) == 0:
            return cls(token_type, documents=documents, weighted=weighted)
        pairs = pa.table({"doc": pa.array(doc_ids, pa.int64()), "token": tokens})
        if weighted:
            pairs = pairs.append_column("w", as_weights(weights))
            counts = pairs.group_by("token").aggregate([("doc", "count"), ("w", "sum")])
            counts = counts.rename_columns(["token", "count", "weight"])
        else:
            counts = pairs.group_by("token").aggregate([("doc", "count")]).rename_columns(["token", "count"])
        if with_doc_counts:
            per_doc = pairs.group_by(["token", "doc"]).aggregate([]).group_by("token").aggregate([("doc", "count")])
            per_doc = per_doc.rename_columns(["token", "doc_count"])
            table = counts.join(per_doc, "token")
        else:
            table = counts.append_column("doc_count", pa.array(np.zeros(counts.num_rows, np.int64)))
        schema = _schema(token_type, weighted)
        return cls(token_type, [table.select(schema.names).cast(schema)], documents, len(tokens), weighted)

    @classmethod
    def from_ngram_ids(cls, doc_ids: np.ndarray, ids: np.ndarray, dictionary: pa.Array,
                       widths: Sequence[int], documents: int, with_doc_counts: bool = True,
                       separator: bytes = b" ") -> Optional["TokenCounts"]:
        """Counts the n-grams of dictionary-encoded tokens (`dictionary[ids[i]]` in
        document `doc_ids[i]`, documents contiguous) without building the string of
        every occurrence: see `NgramKeyCounts`. About 3x faster than hashing every
        n-gram string.

        The caller guarantees that different widths never give the same string (see
        `text.widths_never_collide`). Returns None when a key would not fit in 63 bits;
        the caller then counts strings with `from_tokens`.
        """
        counts = NgramKeyCounts.count(doc_ids, ids, len(dictionary), widths, documents, with_doc_counts)
        return None if counts is None else counts.to_token_counts(dictionary, separator)

    def merge(self, other: "TokenCounts") -> "TokenCounts":
        merged = TokenCounts(self.token_type, self._tables + other._tables,
                             self.documents + other.documents, self.occurrences + other.occurrences,
                             self.weighted or other.weighted)
        # Re-aggregate once the pending rows outgrow 3x the largest table (the last
        # compaction, usually): each row is then re-aggregated O(1) times on average,
        # where compacting on every merge would cost O(batches) per row.
        largest = max((t.num_rows for t in merged._tables), default=0)
        if len(merged._tables) > 1 and merged._pending_rows > max(_COMPACT_ROWS, 3 * largest):
            merged._compact()
        return merged

    def table(self) -> pa.Table:
        """The distinct tokens with their counts, aggregated (order unspecified)."""
        self._compact()
        return self._tables[0] if self._tables else _schema(self.token_type, self.weighted).empty_table()

    def without(self, tokens: Sequence) -> "TokenCounts":
        """Drops the mask and OOV tokens, as Keras does before ranking."""
        if not tokens:
            return self
        table = self.table()
        drop = pc.is_in(table["token"], value_set=pa.array(list(tokens), self.token_type))
        return TokenCounts(self.token_type, [table.filter(pc.invert(drop))], self.documents, self.occurrences,
                           self.weighted)

    def at_least(self, min_count: int = 1, min_document_frequency: int = 1) -> "TokenCounts":
        """Only the tokens with count >= min_count and doc_count >= min_document_frequency
        (a weighted count: its weight >= min_count, as TFT's frequency_threshold)."""
        if min_count <= 1 and min_document_frequency <= 1:
            return self
        table = self.table()
        # doc_count is 0 unless document frequencies are counted (only a df threshold
        # or tf_idf asks for them), so it is compared only under a df threshold.
        ranking = table[vocab.rank_column(table)]
        keep = pc.greater_equal(ranking, pa.scalar(min_count).cast(ranking.type))
        if min_document_frequency > 1:
            keep = pc.and_(keep, pc.greater_equal(table["doc_count"], min_document_frequency))
        return TokenCounts(self.token_type, [table.filter(keep)], self.documents, self.occurrences, self.weighted)

    def ranked(self, limit: Optional[int] = None) -> pa.Table:
        """Tokens in Keras's order (`vocab.rank_table`), cut to `limit`."""
        return vocab.rank_table(self.table(), limit)

    def shards(self, num_shards: int) -> List["TokenCounts"]:
        """Splits by a stable hash of the token; totals stay with shard 0."""
        if num_shards == 1:
            return [self]  # nothing to split: spare a hash and a copy of every row
        table = self.table()
        which = shard_of(table["token"].combine_chunks(), num_shards)
        # One take grouping rows by shard, then zero-copy slices (not a filter per shard).
        grouped = table.take(pa.array(np.argsort(which, kind="stable")))
        ends = np.cumsum(np.bincount(which, minlength=num_shards))
        out = []
        for shard in range(num_shards):
            start = int(ends[shard - 1]) if shard else 0
            part = grouped.slice(start, int(ends[shard]) - start)
            totals = (self.documents, self.occurrences) if shard == 0 else (0, 0)
            out.append(TokenCounts(self.token_type, [part] if part.num_rows else [], *totals, self.weighted))
        return out

    def _compact(self) -> None:
        if len(self._tables) <= 1:
            return
        table = pa.concat_tables(self._tables).combine_chunks()
        names = _schema(self.token_type, self.weighted).names
        table = table.group_by("token").aggregate([(name, "sum") for name in names[1:]])
        table = table.rename_columns(names).select(names)
        self._tables = [table]
        self._pending_rows = table.num_rows

    @property
    def nbytes(self) -> int:
        """Bytes held by the pending tables (what a read task measures against PENDING_COUNT_BYTES)."""
        return sum(t.nbytes for t in self._tables)

    def to_bytes(self) -> bytes:
        """One Arrow IPC stream: a record batch per pending table, totals in the schema
        metadata. IPC writes only the bytes the columns use (see pipelines.arrow_pickle)."""
        metadata = {b"documents": str(self.documents).encode(), b"occurrences": str(self.occurrences).encode()}
        schema = _schema(self.token_type, self.weighted).with_metadata(metadata)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema) as writer:
            for table in self._tables:
                writer.write_batch(pa.record_batch(
                    [table.column(i).combine_chunks() for i in range(len(schema))], schema=schema))
        return sink.getvalue().to_pybytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "TokenCounts":
        reader = pa.ipc.open_stream(data)
        metadata = reader.schema.metadata
        schema = reader.schema.remove_metadata()
        tables = [pa.Table.from_batches([batch], schema) for batch in reader]
        return cls(schema.field("token").type, tables, int(metadata[b"documents"]),
                   int(metadata[b"occurrences"]), "weight" in schema.names)

    def __reduce__(self):
        return (TokenCounts.from_bytes, (self.to_bytes(),))


class NgramKeyCounts:
    """Counts of n-grams as int64 keys: each window of dictionary ids becomes one key
    (its ids in base len(dictionary)), counted by sorting; strings are built only for
    the distinct n-grams, once, by `to_token_counts`. Counts of disjoint document sets
    over the same dictionary merge by key, so parts of a batch can be counted in
    parallel threads (numpy releases the GIL) and merged before any string is built.
    """

    def __init__(self, base: int, per_width: dict, documents: int, occurrences: int):
        self.base = base
        self.per_width = per_width  # width -> (distinct keys, counts, doc_counts)
        self.documents = documents
        self.occurrences = occurrences

    @classmethod
    def count(cls, doc_ids: np.ndarray, ids: np.ndarray, base: int, widths: Sequence[int],
              documents: int, with_doc_counts: bool) -> Optional["NgramKeyCounts"]:
        """None when a key (times the document count, for document frequencies) would
        not fit in 63 bits."""
        base = max(base, 1)
        per_doc = documents if with_doc_counts else 1
        if any(base ** w * max(per_doc, 1) >= 1 << 63 for w in widths):
            return None
        per_width, occurrences = {}, 0
        ids = ids.astype(np.int64)
        for width in widths:
            if width == 1:
                keys, key_docs = ids, doc_ids
            else:
                starts = window_starts(doc_ids, width)
                keys, key_docs = ids[starts], doc_ids[starts]
                for j in range(1, width):
                    keys = keys * base + ids[starts + j]
            if len(keys):
                per_width[width] = _count_keys(keys, key_docs if with_doc_counts else None,
                                               per_doc, base if width == 1 else None)
                occurrences += len(keys)
        return cls(base, per_width, documents, occurrences)

    @classmethod
    def merged(cls, parts: Sequence["NgramKeyCounts"]) -> "NgramKeyCounts":
        """Sum of counts of disjoint document sets (same dictionary)."""
        per_width = {}
        for width in sorted({w for p in parts for w in p.per_width}):
            pieces = [p.per_width[width] for p in parts if width in p.per_width]
            if len(pieces) == 1:
                per_width[width] = pieces[0]
                continue
            keys, counts, doc_counts = (np.concatenate(column) for column in zip(*pieces))
            order = np.argsort(keys, kind="stable")
            keys = keys[order]
            firsts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
            per_width[width] = (keys[firsts], np.add.reduceat(counts[order], firsts),
                                np.add.reduceat(doc_counts[order], firsts))
        return cls(parts[0].base, per_width, sum(p.documents for p in parts),
                   sum(p.occurrences for p in parts))

    def to_token_counts(self, dictionary: pa.Array, separator: bytes = b" ") -> "TokenCounts":
        base, tables = self.base, []
        for width, (distinct, counts, doc_counts) in sorted(self.per_width.items()):
            # The key's digits in base `base`, most significant first: one divmod per
            # digit but the first (a key is below base ** width), none for unigrams.
            rest, digits = distinct, []
            for _ in range(width - 1):
                rest, digit = np.divmod(rest, base)
                digits.append(digit)
            parts = [dictionary.take(pa.array(digit)) for digit in [rest, *digits[::-1]]]
            tokens = parts[0] if width == 1 else pc.binary_join_element_wise(*parts, separator)
            tables.append(pa.table({"token": tokens, "count": counts, "doc_count": doc_counts},
                                   schema=_schema(dictionary.type)))
        # Widths never collide, so the tables concatenate into one aggregated table.
        table = pa.concat_tables(tables).combine_chunks() if tables else None
        return TokenCounts(dictionary.type, [table] if table is not None else [],
                           self.documents, self.occurrences)


def _count_keys(keys: np.ndarray, doc_ids: Optional[np.ndarray], num_docs: int, dense_base: Optional[int]):
    """Distinct keys with their counts and (when `doc_ids` is given) the number of
    distinct documents each occurs in, by one sort of key * num_docs + doc."""
    if doc_ids is None:
        if dense_base is not None:  # unigram ids are dense: a histogram is enough
            histogram = np.bincount(keys, minlength=dense_base)
            distinct = np.flatnonzero(histogram)
            return distinct, histogram[distinct], np.zeros(len(distinct), np.int64)
        ordered = np.sort(keys)
        firsts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
        return ordered[firsts], np.diff(np.append(firsts, len(ordered))), np.zeros(len(firsts), np.int64)
    combined = np.sort(keys * num_docs + doc_ids)
    grams = combined // num_docs
    firsts = np.flatnonzero(np.concatenate([[True], grams[1:] != grams[:-1]]))
    new_pair = np.concatenate([[True], combined[1:] != combined[:-1]])
    return grams[firsts], np.diff(np.append(firsts, len(grams))), np.add.reduceat(new_pair.astype(np.int64), firsts)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads bits so `h % n` is balanced."""
    h = h.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


def shard_of(tokens: pa.Array, num_shards: int) -> np.ndarray:
    """A stable shard number per token, the same on every worker and every run.

    Written here because Arrow exposes no stable hash kernel and hashing each token
    in Python would cost a Python call per token. A shard only balances work (the
    result never depends on it), so strings are hashed from their length and their
    first 16 and last 8 bytes, read as unaligned 64-bit words in a few vector
    operations, then mixed with splitmix64.
    """
    if num_shards == 1:
        return np.zeros(len(tokens), np.int64)
    if pa.types.is_integer(tokens.type):
        h = _mix(tokens.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64))
        return (h % np.uint64(num_shards)).astype(np.int64)
    if len(tokens) == 0:
        return np.zeros(0, np.int64)
    words = ByteWords(tokens)
    starts, lengths = words.starts, words.lengths
    head = words.word(starts) & low_bytes(lengths)
    middle = words.word(starts + 8) & low_bytes(lengths - 8)
    tail = words.word(starts + lengths - 8) & high_bytes(lengths)  # last <=8 bytes
    with np.errstate(over="ignore"):
        h = _mix(_mix(_mix(head ^ lengths.astype(np.uint64)) ^ middle) ^ tail)
    return (h % np.uint64(num_shards)).astype(np.int64)
