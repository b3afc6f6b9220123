"""Counting and ranking a feature's vocabulary without holding it on one worker.

Three kinds of files in the job's work directory carry the counts; Beam only moves
references to them, so no runner (FnApiRunner keeps a whole shuffle in its driver's
memory and hands a worker its share of a stage's input at once) ever holds more than
a shard of the distinct tokens, and the shuffle stays small. Beam's own guidance
for large elements: store the blobs, pass their metadata.
1. Part files (`write_parts`): a read task's partial counts, one record batch per
   shard (a disjoint slice of the distinct tokens, by stable hash).
2. Run files (`rank_shard`): a shard's parts merged into exact counts, ranked; only
   its first `max_tokens` can make the global cut, so a shard keeps no more.
3. The vocabulary (`merged_ranking`, `VocabularyWriter`): the runs merged by batches
   (about one batch per run in memory), written once, in order.
With `keep_state`, a shard also writes all its distinct tokens sorted by token (a
state run), and the finalizer merges those by token into the kept state
(`merged_by_token`, `state_files.TokenStateWriter`), by batches too.
"""

import dataclasses
import uuid
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import failpoints
from pipelines.errors import InputError
from prepro import fs, spec as spec_lib, vocab
from prepro.state_files import HashedFile
from prepro.stats import TokenCounts

_RUN_BATCH = 65536


@dataclasses.dataclass(frozen=True)
class PartRef:
    """One shard's partial counts in the part file `path` (its record batch number is
    the shard's, which the reference travels with as its key)."""
    path: str
    documents: int      # totals ride on shard 0's reference
    occurrences: int


def counts_schema(token_type: pa.DataType, weighted: bool = False) -> pa.Schema:
    """(token, count, doc_count[, weight]): the columns of part, run and state files."""
    return TokenCounts.empty(token_type, weighted).table().schema


def write_parts(name: str, counts: TokenCounts, num_shards: int, work_dir: str,
                written: Optional[Callable[[int], None]] = None) -> Iterator[Tuple[int, PartRef]]:
    """Writes `counts` split into shards as one part file; (shard, reference) of
    every shard that holds tokens or totals. `written` is told the file's size."""
    shards = counts.shards(num_shards)
    path = fs.join(work_dir, name, f"part-{uuid.uuid4().hex}.arrow")
    schema = counts.table().schema
    with fs.open_write(path) as raw, _Counted(raw) as f, pa.ipc.new_file(f, schema) as writer:
        for part in shards:
            writer.write_batch(pa.record_batch([c.combine_chunks() for c in part.table().columns], schema=schema))
    if written is not None:
        written(f.written)
    for shard, part in enumerate(shards):
        if part.table().num_rows or part.documents:
            yield shard, PartRef(path, part.documents, part.occurrences)


class _Counted:
    """A writable file that counts the bytes written through it."""

    def __init__(self, f):
        self._f, self.written = f, 0

    def write(self, data) -> int:
        self.written += len(memoryview(data))
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def read_part(ref: PartRef, shard: int, token_type: pa.DataType, weighted: bool = False) -> TokenCounts:
    """Shard `shard`'s partial counts in the part file of `ref` (only its batch is read)."""
    with fs.open_read(ref.path) as f:
        batch = pa.ipc.open_file(f).get_batch(shard)
        table = pa.Table.from_batches([batch]).cast(counts_schema(token_type, weighted))
    return TokenCounts(token_type, [table] if table.num_rows else [], ref.documents, ref.occurrences, weighted)


def rank_shard(feature: spec_lib.FeatureSpec, shard: int, refs: Iterable[PartRef], work_dir: str,
               keep_state: bool = False, whole: bool = False) -> "Run":
    """Merges every part of one shard into exact counts and writes its ranked run (and,
    with `keep_state`, its state run). `whole`: every eligible token, not only the first
    `max_tokens` (a stable-index update looks up its base's tokens among all of them)."""
    token_type, weighted = pa.int64() if feature.is_integer else pa.binary(), feature.weight is not None
    merged = TokenCounts.empty(token_type, weighted)
    for ref in refs:  # lazily: compaction keeps about a shard's distinct tokens in memory
        merged = merged.merge(read_part(ref, shard, token_type, weighted))
    run = write_run(feature, merged, work_dir, shard, keep_state, whole)
    failpoints.reach("rank")
    return run


@dataclasses.dataclass(frozen=True)
class Run:
    path: str
    distinct: int       # distinct tokens in the shard (before any cut), specials removed
    occurrences: int    # occurrences of those tokens
    documents: int
    occurrences_all: int  # occurrences including mask/OOV tokens
    below_thresholds: int = 0  # distinct tokens dropped by min_count / min_document_frequency
    state_path: Optional[str] = None  # the state run: all `distinct` tokens, sorted by token
    count_distribution: Tuple[Tuple[int, int], ...] = ()  # (count, distinct tokens with it), all tokens


def count_distribution(counts: np.ndarray) -> Tuple[Tuple[int, int], ...]:
    """(count, how many tokens have it) for each count in `counts`, counts descending:
    the whole rank-frequency curve in about sqrt(2 * occurrences) pairs at most."""
    values, tokens = np.unique(counts, return_counts=True)
    return tuple(zip(values[::-1].tolist(), tokens[::-1].tolist()))


def merged_count_distribution(runs: List["Run"]) -> Tuple[np.ndarray, np.ndarray]:
    """The runs' count distributions summed (shards hold disjoint tokens): (counts
    descending, tokens)."""
    pairs = np.array([pair for run in runs for pair in run.count_distribution], np.int64).reshape(-1, 2)
    values, at = np.unique(pairs[:, 0], return_inverse=True)
    tokens = np.bincount(at, weights=pairs[:, 1], minlength=len(values)).astype(np.int64) \
        if len(pairs) else np.zeros(0, np.int64)
    return values[::-1], tokens[::-1]


def write_run(feature: spec_lib.FeatureSpec, counts: TokenCounts, work_dir: str, shard: int,
              keep_state: bool = False, whole: bool = False) -> Run:
    kept = counts.without(spec_lib.special_tokens(feature))
    table = kept.table()
    state_path = _write_state_run(table, work_dir, feature.name, shard) if keep_state else None
    # Thresholds are exact here: a shard holds the complete counts of its tokens.
    eligible = kept.at_least(feature.min_count, feature.min_document_frequency)
    ranked = eligible.ranked(None if whole else spec_lib.max_learned_tokens(feature))
    path = fs.join(work_dir, feature.name, f"run-{shard:05d}-{uuid.uuid4().hex}.arrow")
    with fs.open_write(path) as f, pa.ipc.new_stream(f, ranked.schema) as writer:
        writer.write_table(ranked, max_chunksize=_RUN_BATCH)
    occurrences = int(pa.compute.sum(table["count"]).as_py() or 0)
    return Run(path, table.num_rows, occurrences, counts.documents, counts.occurrences,
               table.num_rows - eligible.table().num_rows, state_path,
               count_distribution(table["count"].to_numpy()))


def _write_state_run(table: pa.Table, work_dir: str, name: str, shard: int) -> str:
    ordered = table.sort_by("token")
    path = fs.join(work_dir, name, f"state-{shard:05d}-{uuid.uuid4().hex}.arrow")
    with fs.open_write(path) as f, pa.ipc.new_stream(f, ordered.schema) as writer:
        writer.write_table(ordered, max_chunksize=_RUN_BATCH)
    return path


def merged_by_token(runs: List[Run]) -> Iterator[pa.Table]:
    """The state runs' rows in token order, by batches (`_merged_rounds`)."""
    def through(table: pa.Table, bound) -> int:
        return pc.sum(pc.less_equal(table["token"], pa.scalar(bound, table["token"].type))).as_py() or 0

    for final in _merged_rounds([r.state_path for r in runs], lambda t: t["token"][-1].as_py(), min, through):
        yield final.sort_by("token")


def _stream_run(path: str) -> Iterator[pa.Table]:
    """A run's rows, one batch of its file at a time."""
    with fs.open_read(path) as f:
        for batch in pa.ipc.open_stream(f):
            yield pa.Table.from_batches([batch])


def merged_ranking(runs: List[Run], limit: Optional[int], token_type: pa.DataType) -> Iterator[pa.Table]:
    """Tables of (token, count, doc_count) in Keras's order across all runs, at most
    `limit` rows in all.

    A k-way merge by batches, holding about one batch per run: every unread row of a
    run ranks below its last buffered row, so the buffered rows ranking at or above
    the highest of those rows are final; they are sorted together and emitted (the
    run that set the bound empties, so every round makes progress). Shards hold
    disjoint tokens, so rows are never aggregated and the order is total.
    """
    if limit is not None and limit <= 0:
        return
    remaining = limit
    rounds = _merged_rounds([r.path for r in runs], vocab.last_rank_key, max,
                            lambda t, bound: vocab.ranks_at_or_above(t, *bound))
    for final in rounds:
        ranked = TokenCounts(token_type, [final], weighted="weight" in final.column_names).ranked(remaining)
        yield from (ranked.slice(i, _RUN_BATCH) for i in range(0, ranked.num_rows, _RUN_BATCH))
        remaining = None if remaining is None else remaining - ranked.num_rows
        if remaining is not None and remaining <= 0:
            return


def stable_ranking(runs: List[Run], base_tokens: List, limit: Optional[int], token_type: pa.DataType,
                   work_dir: str, name: str) -> Iterator[pa.Table]:
    """A stable-index update's vocabulary, as tables of (token, count, doc_count) in
    index order: the base's learned tokens in their base order, then the other tokens
    in Keras's order, while `limit` leaves room (the rest go to OOV).

    The runs must be whole (`rank_shard(whole=True)`): every token's merged counts are
    in them. One pass over the merged ranking: the base's tokens' rows are set aside
    (about the base vocabulary in memory), the new ones spooled to a file in `work_dir`,
    which is read back after the base's rows are written."""
    base = pa.array(base_tokens, token_type)
    room = None if limit is None else max(0, limit - len(base))
    held: List[pa.Table] = []
    spool = fs.join(work_dir, name, f"stable-{uuid.uuid4().hex}.arrow")
    writer, schema = None, None
    with fs.open_write(spool) as f:
        for table in merged_ranking(runs, None, token_type):
            if writer is None:
                schema = table.schema
                writer = pa.ipc.new_stream(f, schema)
            in_base = pc.is_in(table["token"], value_set=base)
            held.append(table.filter(in_base))
            fresh = table.filter(pc.invert(in_base))
            if room is None or room > 0:
                fresh = fresh if room is None else fresh.slice(0, room)
                writer.write_table(fresh, max_chunksize=_RUN_BATCH)
                room = None if room is None else room - fresh.num_rows
        if writer is not None:
            writer.close()
    if not held:
        raise InputError("no tokens to rank", feature=name)
    found = pa.concat_tables(held)
    at = pc.index_in(base, value_set=found["token"].combine_chunks())
    if at.null_count:  # counts only grow, so every base token is among the merged ones
        missing = base.filter(pc.is_null(at))[0].as_py()
        raise InputError(f"the base's token {missing!r} is not among the merged counts", feature=name)
    ordered = found.take(at)
    for start in range(0, ordered.num_rows, _RUN_BATCH):
        yield ordered.slice(start, _RUN_BATCH)
    if schema is not None:
        yield from _stream_run(spool)


def _merged_rounds(paths: List[str], last_key: Callable, earliest: Callable,
                   rows_through: Callable) -> Iterator[pa.Table]:
    """The k-way merge by batches of run files sorted alike, holding about one batch per
    run: every unread row of a run sorts after its last buffered row, so the buffered
    rows sorting at or before the earliest (`earliest` of the `last_key`s) of those rows
    are final (`rows_through(table, bound)` counts them in a buffer); each round yields
    them, unsorted. The run that set the bound empties, so every round makes progress;
    runs read to the end set no bound."""
    streams = [_stream_run(path) for path in sorted(paths)]
    buffers: List[Optional[pa.Table]] = [None] * len(streams)
    while True:
        for i, stream in enumerate(streams):
            while stream is not None and (buffers[i] is None or buffers[i].num_rows == 0):
                buffers[i] = next(stream, None)
                if buffers[i] is None:
                    streams[i] = stream = None
        live = [i for i, b in enumerate(buffers) if b is not None and b.num_rows]
        if not live:
            return
        lasts = [last_key(buffers[i]) for i in live if streams[i] is not None]
        bound = earliest(lasts) if lasts else None
        final = []
        for i in live:
            n = buffers[i].num_rows if bound is None else rows_through(buffers[i], bound)
            final.append(buffers[i].slice(0, n))
            buffers[i] = buffers[i].slice(n)
        yield pa.concat_tables(final)


class VocabularyWriter:
    """Streams ranked tokens into `vocabulary.txt`, their counts into `counts.txt` and,
    when given a third file, their document frequencies (one decimal per learned token,
    exceptions included in both), setting aside exceptions. Only the top tokens and the
    exceptions stay in memory.
    """

    def __init__(self, vocabulary_out, counts_out, frequencies_out=None):
        self.vocabulary = HashedFile(vocabulary_out)
        self.counts = HashedFile(counts_out)
        self.frequencies = HashedFile(frequencies_out) if frequencies_out is not None else None
        self.exceptions: List[list] = []
        self.size = 0
        self.kept_occurrences = 0
        self.top: List[list] = []

    def add(self, ranked: pa.Table) -> None:
        """Appends the next rows of the ranking (token, count, doc_count)."""
        tokens, counts = ranked["token"], ranked["count"].to_numpy()
        top = max(0, 20 - len(self.top))
        for token, count in zip(tokens[:top].to_pylist(), counts[:top]):
            self.top.append([token if isinstance(token, int) else token.decode("utf-8", "replace"), int(count)])
        unsafe = vocab.file_unsafe_positions(tokens)
        for i in unsafe:
            self.exceptions.append([self.size + i, vocab.token_to_json(tokens[i].as_py())])
        if unsafe:
            keep = np.ones(len(tokens), bool)
            keep[unsafe] = False
            tokens = tokens.filter(pa.array(keep))
        self.vocabulary.write(vocab.encode_lines(tokens))
        self.counts.write(vocab.encode_lines(ranked["count"]))
        if self.frequencies is not None:
            self.frequencies.write(vocab.encode_lines(ranked["doc_count"]))
        self.size += ranked.num_rows
        self.kept_occurrences += int(counts.sum())

