"""Ranking a feature's vocabulary without holding it on one worker.

Each shard (a disjoint slice of the distinct tokens, by stable hash) ranks its own
tokens and writes them as a sorted run file; only its first `max_tokens` can make the
global cut, so a shard keeps no more. The finalizer merges the runs (one Arrow sort
when they are bounded by max_tokens, else a streaming k-way merge with one batch per
run in memory) and writes the vocabulary file once, in order.
"""

import dataclasses
import hashlib
import heapq
import itertools
import uuid
from typing import Iterator, List, Optional

import pyarrow as pa

from prepro import fs, spec as spec_lib, vocab
from prepro.stats import TokenCounts

_RUN_BATCH = 65536
_SORT_IN_MEMORY_ROWS = 4_000_000  # runs merged by one Arrow sort up to this many rows


@dataclasses.dataclass(frozen=True)
class Run:
    path: str
    distinct: int       # distinct tokens in the shard (before any cut), specials removed
    occurrences: int    # occurrences of those tokens
    documents: int
    occurrences_all: int  # occurrences including mask/OOV tokens
    below_thresholds: int = 0  # distinct tokens dropped by min_count / min_document_frequency
    kept: int = 0       # tokens in the run file (at most max_tokens)


def write_run(feature: spec_lib.FeatureSpec, counts: TokenCounts, work_dir: str, shard: int) -> Run:
    kept = counts.without(spec_lib.special_tokens(feature))
    table = kept.table()
    # Thresholds are exact here: a shard holds the complete counts of its tokens.
    eligible = kept.at_least(feature.min_count, feature.min_document_frequency)
    ranked = eligible.ranked(spec_lib.max_learned_tokens(feature)).select(["token", "count", "doc_count"])
    path = fs.join(work_dir, feature.name, f"run-{shard:05d}-{uuid.uuid4().hex}.arrow")
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, ranked.schema) as writer:
        writer.write_table(ranked, max_chunksize=_RUN_BATCH)
    fs.write_bytes(path, sink.getvalue().to_pybytes())
    occurrences = int(pa.compute.sum(table["count"]).as_py() or 0)
    return Run(path, table.num_rows, occurrences, counts.documents, counts.occurrences,
               table.num_rows - eligible.table().num_rows, ranked.num_rows)


def _read_run(path: str) -> pa.Table:
    return pa.ipc.open_stream(fs.read_bytes(path)).read_all()


def _stream_run(path: str) -> Iterator[tuple]:
    for batch in pa.ipc.open_stream(fs.read_bytes(path)):
        yield from zip(batch.column(1).to_pylist(), batch.column(0).to_pylist(), batch.column(2).to_pylist())


def merged_ranking(runs: List[Run], limit: Optional[int], token_type: pa.DataType) -> Iterator[pa.Table]:
    """Tables of (token, count, doc_count) in Keras's order across all runs, at most
    `limit` rows in all.

    When the runs are small enough together (each holds at most `limit` tokens) they
    are sorted at once with Arrow; otherwise (no `limit`, or huge ones) a k-way merge
    streams them with one batch per run in memory.
    """
    runs = sorted(runs, key=lambda r: r.path)
    if limit is not None and sum(r.kept for r in runs) <= _SORT_IN_MEMORY_ROWS:
        tables = [_read_run(r.path) for r in runs]
        # Shards hold disjoint tokens: concatenating is aggregating (no group-by needed).
        tables = [t for t in tables if t.num_rows]
        merged = TokenCounts(token_type, [pa.concat_tables(tables)] if tables else []).ranked(limit)
        yield from (merged.slice(i, _RUN_BATCH) for i in range(0, merged.num_rows, _RUN_BATCH))
        return
    # Tokens are distinct, so the document frequency never decides the order.
    merged = heapq.merge(*(_stream_run(r.path) for r in runs), reverse=True)
    if limit is not None:
        merged = itertools.islice(merged, limit)
    while True:
        chunk = list(itertools.islice(merged, _RUN_BATCH))
        if not chunk:
            return
        counts, tokens, frequencies = zip(*chunk)
        yield pa.table({"token": pa.array(tokens, token_type), "count": pa.array(counts, pa.int64()),
                        "doc_count": pa.array(frequencies, pa.int64())})


class HashedFile:
    """A file being written, with its size and SHA-256 computed on the way."""

    def __init__(self, out):
        self._out = out
        self._sha = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self._out.write(data)
        self._sha.update(data)
        self.bytes += len(data)

    def file_entry(self):
        return {"bytes": self.bytes, "sha256": self._sha.hexdigest()}


class VocabularyWriter:
    """Streams ranked tokens into `vocabulary.txt` and, when given a second file, their
    document frequencies (one decimal per learned token, exceptions included), setting
    aside exceptions. Only the top tokens and the exceptions stay in memory.
    """

    def __init__(self, vocabulary_out, frequencies_out=None):
        self.vocabulary = HashedFile(vocabulary_out)
        self.frequencies = HashedFile(frequencies_out) if frequencies_out is not None else None
        self.exceptions: List[list] = []
        self.size = 0
        self.kept_occurrences = 0
        self.top: List[list] = []

    def add(self, ranked: pa.Table) -> None:
        """Appends the next rows of the ranking (token, count, doc_count)."""
        tokens = ranked["token"].to_pylist()
        counts = ranked["count"].to_numpy()
        for token, count in zip(tokens[:max(0, 20 - len(self.top))], counts):
            self.top.append([token if isinstance(token, int) else token.decode("utf-8", "replace"), int(count)])
        unsafe = set(vocab.file_unsafe_positions(ranked["token"]))
        for i in sorted(unsafe):
            self.exceptions.append([self.size + i, vocab.token_to_json(tokens[i])])
        lines = [vocab.encode_token(t) for i, t in enumerate(tokens) if i not in unsafe]
        if lines:
            self.vocabulary.write(b"\n".join(lines) + b"\n")
        if self.frequencies is not None and tokens:
            self.frequencies.write(b"\n".join(b"%d" % d for d in ranked["doc_count"].to_numpy()) + b"\n")
        self.size += len(tokens)
        self.kept_occurrences += int(counts.sum())


def cleanup(work_dir: str) -> None:
    fs.delete([work_dir])
