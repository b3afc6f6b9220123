"""Exact token counts: occurrences, document frequencies and totals, mergeable.

A `TokenCounts` holds a table of distinct tokens (binary or int64) with their
occurrence count and document frequency, plus totals. Tables are merged lazily:
pending tables are concatenated and re-aggregated with Arrow's hash group-by (C++)
once they grow, so merging many small partial counts costs little Python.
"""

from typing import List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prepro import vocab

_COMPACT_ROWS = 1 << 20  # re-aggregate pending tables past this many rows


def _schema(token_type: pa.DataType) -> pa.Schema:
    return pa.schema([("token", token_type), ("count", pa.int64()), ("doc_count", pa.int64())])


class TokenCounts:
    """Counts of tokens over documents.

    Example:
    >>> c = TokenCounts.from_tokens(np.array([0, 0, 1]), pa.array([b"a", b"a", b"b"]), 2)
    >>> c.merge(c).table().to_pydict()["count"]
    [4, 2]
    """

    def __init__(self, token_type: pa.DataType, tables: Sequence[pa.Table] = (),
                 documents: int = 0, occurrences: int = 0):
        self.token_type = token_type
        self._tables: List[pa.Table] = list(tables)
        self._pending_rows = sum(t.num_rows for t in self._tables)
        self.documents = documents        # rows (documents) seen, empty ones included
        self.occurrences = occurrences    # token occurrences seen

    @classmethod
    def empty(cls, token_type: pa.DataType) -> "TokenCounts":
        return cls(token_type)

    @classmethod
    def from_tokens(cls, doc_ids: np.ndarray, tokens: pa.Array, documents: int) -> "TokenCounts":
        """Counts one batch: `tokens[i]` occurred in document `doc_ids[i]`."""
        token_type = tokens.type
        if len(tokens) == 0:
            return cls(token_type, documents=documents)
        pairs = pa.table({"doc": pa.array(doc_ids, pa.int64()), "token": tokens})
        counts = pairs.group_by("token").aggregate([("doc", "count")]).rename_columns(["token", "count"])
        per_doc = pairs.group_by(["token", "doc"]).aggregate([]).group_by("token").aggregate([("doc", "count")])
        per_doc = per_doc.rename_columns(["token", "doc_count"])
        table = counts.join(per_doc, "token").select(["token", "count", "doc_count"])
        return cls(token_type, [table.cast(_schema(token_type))], documents, len(tokens))

    def merge(self, other: "TokenCounts") -> "TokenCounts":
        merged = TokenCounts(self.token_type, self._tables + other._tables,
                             self.documents + other.documents, self.occurrences + other.occurrences)
        if merged._pending_rows > _COMPACT_ROWS and len(merged._tables) > 1:
            merged._compact()
        return merged

    def table(self) -> pa.Table:
        """The distinct tokens with their counts, aggregated (order unspecified)."""
        self._compact()
        return self._tables[0] if self._tables else _schema(self.token_type).empty_table()

    def without(self, tokens: Sequence) -> "TokenCounts":
        """Drops the mask and OOV tokens, as Keras does before ranking."""
        if not tokens:
            return self
        table = self.table()
        drop = pc.is_in(table["token"], value_set=pa.array(list(tokens), self.token_type))
        return TokenCounts(self.token_type, [table.filter(pc.invert(drop))], self.documents, self.occurrences)

    def at_least(self, min_count: int = 1, min_document_frequency: int = 1) -> "TokenCounts":
        """Only the tokens with count >= min_count and doc_count >= min_document_frequency."""
        if min_count <= 1 and min_document_frequency <= 1:
            return self
        table = self.table()
        keep = pc.and_(pc.greater_equal(table["count"], min_count),
                       pc.greater_equal(table["doc_count"], min_document_frequency))
        return TokenCounts(self.token_type, [table.filter(keep)], self.documents, self.occurrences)

    def ranked(self, limit: Optional[int] = None) -> pa.Table:
        """Tokens in Keras's order (count desc, token desc), cut to `limit`."""
        table = self.table()
        order = pc.sort_indices(table, sort_keys=[("count", "descending"), ("token", "descending")])
        if limit is not None:
            order = order[:limit]
        return table.take(order)

    def shards(self, num_shards: int) -> List["TokenCounts"]:
        """Splits by a stable hash of the token; totals stay with shard 0."""
        table = self.table()
        which = shard_of(table["token"].combine_chunks(), num_shards)
        out = []
        for shard in range(num_shards):
            part = table.filter(pa.array(which == shard))
            totals = (self.documents, self.occurrences) if shard == 0 else (0, 0)
            out.append(TokenCounts(self.token_type, [part] if part.num_rows else [], *totals))
        return out

    def _compact(self) -> None:
        if len(self._tables) <= 1:
            return
        table = pa.concat_tables(self._tables).combine_chunks()
        table = table.group_by("token").aggregate([("count", "sum"), ("doc_count", "sum")])
        table = table.rename_columns(["token", "count", "doc_count"]).select(["token", "count", "doc_count"])
        self._tables = [table]
        self._pending_rows = table.num_rows

    def __reduce__(self):
        # Beam ships accumulators between workers; Arrow tables pickle as IPC buffers.
        return (TokenCounts, (self.token_type, self._tables, self.documents, self.occurrences))


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
    in Python would cost a Python call per token: a polynomial over the bytes,
    vectorised with NumPy, then splitmix64.
    """
    if pa.types.is_integer(tokens.type):
        h = _mix(tokens.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64))
        return (h % np.uint64(num_shards)).astype(np.int64)
    if len(tokens) == 0:
        return np.zeros(0, np.int64)
    tokens = tokens.cast(pa.binary()) if not pa.types.is_binary(tokens.type) else tokens
    offsets = np.frombuffer(tokens.buffers()[1], np.int32)[tokens.offset:tokens.offset + len(tokens) + 1].astype(np.int64)
    data_buf = tokens.buffers()[2]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    lo, hi = int(offsets[0]), int(offsets[-1])
    data = np.append(data[lo:hi], np.uint8(0)).astype(np.uint64)
    starts = offsets[:-1] - lo
    lengths = np.diff(offsets)
    position = np.arange(hi - lo) - np.repeat(starts, lengths)
    powers = _POWERS[np.minimum(position, len(_POWERS) - 1)]
    with np.errstate(over="ignore"):
        weighted = np.append(data[:-1] * powers, np.uint64(0))
        sums = np.add.reduceat(weighted, np.minimum(starts, hi - lo))
        sums = np.where(lengths == 0, np.uint64(0), sums) + lengths.astype(np.uint64)
    return (_mix(sums) % np.uint64(num_shards)).astype(np.int64)


def _powers(n: int) -> np.ndarray:
    out = np.empty(n, np.uint64)
    acc = 1
    for i in range(n):
        out[i] = acc
        acc = (acc * 1099511628211) % (1 << 64)
    return out


# Bytes past the 4096th share a weight; they still count, with a repeated weight.
_POWERS = _powers(4096)
