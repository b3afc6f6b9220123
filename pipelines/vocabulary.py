"""Ranking a feature's vocabulary without holding it on one worker.

Each shard (a disjoint slice of the distinct tokens, by stable hash) ranks its own
tokens and writes them as a sorted run file; only its first `max_tokens` can make the
global cut, so a shard keeps no more. The finalizer streams a k-way merge of the runs
and writes the vocabulary file once, in order. Memory is one batch per run.
"""

import dataclasses
import hashlib
import heapq
import uuid
from typing import Iterator, List, Optional

import pyarrow as pa

from prepro import fs, spec as spec_lib, vocab
from prepro.stats import TokenCounts

_RUN_BATCH = 65536


@dataclasses.dataclass(frozen=True)
class Run:
    path: str
    distinct: int       # distinct tokens in the shard (before any cut), specials removed
    occurrences: int    # occurrences of those tokens
    documents: int
    occurrences_all: int  # occurrences including mask/OOV tokens
    below_thresholds: int = 0  # distinct tokens dropped by min_count / min_document_frequency


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
               table.num_rows - eligible.table().num_rows)


def _read_run(path: str) -> Iterator[tuple]:
    reader = pa.ipc.open_stream(fs.read_bytes(path))
    for batch in reader:
        yield from zip(batch.column(1).to_pylist(), batch.column(0).to_pylist(), batch.column(2).to_pylist())


def merged_ranking(runs: List[Run], limit: Optional[int]) -> Iterator[tuple]:
    """(count, token, document frequency) in Keras's order across all runs, at most
    `limit` of them. Tokens are distinct, so the document frequency never decides."""
    merged = heapq.merge(*(_read_run(r.path) for r in sorted(runs, key=lambda r: r.path)), reverse=True)
    for i, item in enumerate(merged):
        if limit is not None and i >= limit:
            return
        yield item


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
    """Streams ranked tokens into `vocabulary.txt` and their document frequencies into
    `document_frequencies.txt` (one decimal per learned token, exceptions included),
    setting aside exceptions. Only the top tokens and the exceptions stay in memory.
    """

    def __init__(self, vocabulary_out, frequencies_out):
        self.vocabulary = HashedFile(vocabulary_out)
        self.frequencies = HashedFile(frequencies_out)
        self.exceptions: List[list] = []
        self.size = 0
        self.kept_occurrences = 0
        self.top: List[list] = []

    def add(self, count: int, token, document_frequency: int) -> None:
        if len(self.top) < 20:
            self.top.append([token if isinstance(token, int) else token.decode("utf-8", "replace"), count])
        if vocab.is_file_safe(token):
            self.vocabulary.write(vocab.encode_token(token) + b"\n")
        else:
            self.exceptions.append([self.size, vocab.token_to_json(token)])
        self.frequencies.write(b"%d\n" % document_frequency)
        self.size += 1
        self.kept_occurrences += count


def cleanup(work_dir: str) -> None:
    fs.delete([work_dir])
