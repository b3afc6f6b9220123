"""The analyze job's stages, as named composite PTransforms (the Dataflow graph shows them):

    Extract (ExtractStatistics)  read tasks or batches of rows -> token counts spilled
                          to part files, numeric statistics, checked figures, row
                          counts, golden-row candidates
    RankVocabularies      part files -> per shard a ranked run -> per feature the
                          vocabulary file (k-way merge) and its manifest entry
    SummarizeNumeric      per task statistics -> merged in task order -> state files
    CheckStateless        figures of the layers with nothing to learn
    CountRows             rows (and bytes) per input file
    PickGoldenRows        the candidates of smallest content key
    WriteManifestCandidate  everything above -> the manifest candidate in the work directory

`pipelines/analyze.py` composes them (`AnalyzeFeatures`) and publishes what they wrote.
Each is tested on its own with Beam's TestPipeline (tests/test_transforms.py).
"""

import contextlib
import json
import platform
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
import pyarrow as pa

from pipelines import failpoints, keras_helper
from pipelines import io as prepro_io
from pipelines.progress import Reporter
from pipelines.checks import checked_tally, finalize_stateless
from pipelines.combiners import MergeTallies
from pipelines.errors import InputError
from pipelines.extract import SERIAL, Threads, counted_ahead, counts_whole_batches, feature_counts
from pipelines.golden import candidate_rows
from pipelines.numeric import add_batch, new_stats
from pipelines.numeric_state import finalize_numeric
from pipelines.vocabulary import (VocabularyWriter, merged_by_token, merged_count_distribution, merged_ranking,
                                  rank_shard, stable_ranking, write_parts)
from prepro import artifacts, fs, spec as spec_lib, state_files
from prepro.stats import TokenCounts
from prepro.stats.numeric import merge_in_order

METRICS = "prepro"  # namespace of the job's Beam counters (Dataflow shows them live)
DEFAULT_GOLDEN_ROWS = 16
GOLDEN_CANDIDATES = 4  # candidates per golden row: a layer may reject some rows
CANDIDATE, GOLDEN_ROWS = "manifest.candidate.json", "golden_rows.json"
# Numeric parts merge in two levels, in task order: groups of this many consecutive
# parts, then a feature's groups. One worker then holds at most this many part
# statistics (a part's quantile sketch is ~1.4 MB at rank_error 0.001), whatever the
# number of parts.
PARTS_PER_MERGE = 64
# A read task's token counts are merged across its batches (frequent tokens repeat)
# until all its features' together hold this many bytes, then the largest is written
# as a part file (pipelines/vocabulary), so a task holds about this much pending count
# whatever the input and the number of features. (Beam's lifted combine bounds its
# cache by key count, not size.)
PENDING_COUNT_BYTES = 128 << 20


class ExtractStatistics(beam.DoFn):
    """Read tasks (a file, or a part of a big one: `ReadInputs`) or batches of rows
    (`ToBatches`) -> (kind, payload) pairs that `Select` splits by kind: Beam's
    DaskRunner (2.77) sends tagged outputs to the main output, so none are used.

    A read task is read and summarized on its own, its batches in file order; batches
    are summarized per bundle. Per task or bundle: every token feature's counts, merged
    over its batches, written as a part file split into shards by token hash (the
    largest early, when the pending counts outgrow PENDING_COUNT_BYTES), a reference per
    shard; every numeric feature's statistics, keyed so parts merge in a canonical
    order (see prepro.stats.numeric); rows read per source. Per batch: the checked
    input's figures of the features with nothing to learn, and golden-row candidates.

    Progress: a read task's input bytes are counted per batch, in the Beam counter
    input_bytes_read and on the driver's channel `progress` (pipelines/progress.py)."""

    COUNTS = "counts"
    TALLY = "tally"
    ROWS = "rows"
    NUMERIC = "numeric"
    CHECKED = "checked"
    GOLDEN = "golden"

    def __init__(self, spec: spec_lib.Spec, num_shards: int, work_dir: str,
                 batch_bytes: int = prepro_io.BATCH_BYTES, threads: int = 1, golden_rows: int = 0,
                 per_batch: bool = False, progress: Optional[str] = None):
        """`per_batch`: summarize each batch on its own rather than per bundle, for a
        runner that loses finish_bundle's outputs (pipelines/elements.py). `progress`:
        the path of the driver's progress channel (None: counters only)."""
        self._per_batch = per_batch
        self._progress = progress
        self._spec = spec
        self._batch_bytes = batch_bytes
        self._columns = source_columns(spec)
        self._work_dir = work_dir
        self._golden_rows = golden_rows
        self._num_shards = num_shards
        self._threads = threads

    def setup(self):
        self._cancellation = keras_helper.Cancellation(self._work_dir)
        self._pool = Threads(self._threads)
        self._reporter = Reporter(self._progress)

    def teardown(self):
        self._pool.close()
        self._reporter.close()

    def start_bundle(self):
        self._bundle = None

    def process(self, element):
        if not isinstance(element, prepro_io.ReadTask):
            if self._per_batch:
                summary = _Summary(self, _bundle_index(), None)
                yield from summary.add(element)
                yield from summary.finish()
                return
            if self._bundle is None:
                self._bundle = _Summary(self, _bundle_index(), None)
            yield from self._bundle.add(element)
            return
        summary = _Summary(self, element.index, element)
        features_of = prepro_io.features_of_columns(self._spec.features.values())
        batches = prepro_io.read_ahead(lambda bytes_read: prepro_io.read_batches(
            element, element.fmt, self._columns, self._batch_bytes, features_of=features_of, bytes_read=bytes_read),
            summary.bytes_read)
        if self._threads > 1 and counts_whole_batches(self._spec):
            # Each batch counted whole in one thread, `threads` batches at once.
            for batch, counted in counted_ahead(lambda b: summary.count(b, SERIAL), batches, self._threads):
                yield from summary.add(batch, counted)
        else:  # each batch's checks and counts in `add`, numeric values first
            for batch in batches:
                yield from summary.add(batch)
        yield from summary.finish()

    def finish_bundle(self):
        if self._bundle is not None:
            for output in self._bundle.finish():
                yield beam.transforms.window.GlobalWindows.windowed_value(output)
            self._bundle = None


def _bundle_index() -> int:
    """A bundle's place among the parts of a numeric feature: batches of rows have no
    canonical order, so any will do (see AnalyzeFeatures on what that means)."""
    import uuid
    return uuid.uuid4().int >> 66


class _Summary:
    """The statistics of one read task or one bundle of batches, batch by batch."""

    def __init__(self, owner: ExtractStatistics, index: int, task: "prepro_io.ReadTask | None"):
        self._owner, self._index, self._task = owner, index, task
        self._features = sorted(owner._spec.features.items())
        self._numeric = {name: new_stats(f) for name, f in self._features if f.is_numeric}
        self._pending: Dict[str, TokenCounts] = {}
        self._rows: Dict[tuple, int] = {}
        if task is not None:
            self._rows[(task.fmt, task.path)] = 0
        self.rows = 0
        self._bytes_counted = 0  # of the task's bytes, in the counter and on the channel

    def bytes_read(self, position: int, task_done: bool = False) -> None:
        """The task's bytes read so far: what is new is counted (per batch, so one big
        file moves the figures too); at the task's end, the rest of its bytes."""
        new = max(0, position - self._bytes_counted)
        self._bytes_counted += new
        if new:
            Metrics.counter(METRICS, "input_bytes_read").inc(new)
        if new or task_done:
            self._owner._reporter.report(self._task.index, self._bytes_counted, task_done)

    def count(self, batch: prepro_io.Batch, threads: Optional[Threads] = None) -> Tuple[list, list]:
        """One batch's work that needs nothing but the batch, so batches can be counted
        ahead in other threads (no state, no metrics): each token feature's (name,
        counts, tally), each stateless feature's (name, None, figures), and the batch's
        golden-row candidates."""
        counted = []
        for name, feature in self._features:
            if feature.is_numeric:
                continue
            try:
                if feature.is_stateless:
                    counted.append((name, None, checked_tally(batch, feature)))
                else:
                    counted.append((name, *feature_counts(batch, feature, threads or self._owner._pool)))
            except InputError as e:
                raise prepro_io.with_file_rows(e, batch.path, batch.part_offset) from None
        owner = self._owner
        # After the batch's values passed the token features' checks (and its numeric
        # values are checked before the candidates are used), so candidates hold only
        # values the features accept.
        candidates = candidate_rows(batch, owner._columns, owner._spec, GOLDEN_CANDIDATES * owner._golden_rows) \
            if owner._golden_rows else []
        return counted, candidates

    def add(self, batch: prepro_io.Batch, counted: Optional[Tuple[list, list]] = None):
        """Adds one batch, in file order: its numeric statistics, and its `count`
        (computed here when not given) merged into the pending counts."""
        owner, features = self._owner, self._features
        self.rows += batch.table.num_rows
        source = (self._task.fmt, self._task.path) if self._task is not None else ("elements", None)
        self._rows[source] = self._rows.get(source, 0) + batch.table.num_rows
        Metrics.counter(METRICS, "rows_read").inc(batch.table.num_rows)
        Metrics.counter(METRICS, "batches").inc()
        failpoints.reach("read")
        owner._cancellation.raise_if_cancelled()  # the spec refused by Keras meanwhile
        try:
            # One thread per numeric feature: each sees its batches in file order, and
            # NumPy and tfx-bsl's sketch release the GIL (2 threads: ~1.9x on the adds).
            owner._pool.map(lambda item: add_batch(self._numeric[item[0]], batch, item[1]),
                            [(n, f) for n, f in features if f.is_numeric])
        except InputError as e:
            raise prepro_io.with_file_rows(e, batch.path, batch.part_offset) from None
        token_counts, candidates = self.count(batch) if counted is None else counted
        for name, counts, tally in token_counts:
            if counts is None:
                yield (owner.CHECKED, (name, tally))
                continue
            yield (owner.TALLY, (name, tally))
            pending = self._pending
            pending[name] = pending[name].merge(counts) if name in pending else counts
            while sum(c.nbytes for c in pending.values()) > PENDING_COUNT_BYTES:
                largest = max(sorted(pending), key=lambda n: pending[n].nbytes)
                yield from self._spill(largest, pending.pop(largest))
        for candidate in candidates:
            yield (owner.GOLDEN, candidate)

    def finish(self):
        for name in sorted(self._pending):
            yield from self._spill(name, self._pending[name])
        self._pending = {}
        task = self._task
        if task is not None:
            self.bytes_read(task.size, task_done=True)
            Metrics.counter(METRICS, "read_tasks_done").inc()
        for source, rows in sorted(self._rows.items(), key=repr):
            yield (self._owner.ROWS, (source, (rows, task.size if task is not None else 0)))
        for name, stats in self._numeric.items():
            group = (name, self._index // PARTS_PER_MERGE if task is not None else self._index % PARTS_PER_MERGE)
            yield (self._owner.NUMERIC, (group, (self._index, stats.finish())))

    def _spill(self, name: str, counts: TokenCounts):
        Metrics.counter(METRICS, "part_files_written").inc()
        # part_bytes_written: the work directory's traffic, what a cluster's shared
        # storage carries per GB of input (docs/cost-model.md).
        for shard, ref in write_parts(name, counts, self._owner._num_shards, self._owner._work_dir,
                                      Metrics.counter(METRICS, "part_bytes_written").inc):
            yield self._owner.COUNTS, ((name, shard), ref)
        failpoints.reach("count")


def source_columns(spec: spec_lib.Spec) -> Dict[str, str]:
    """Each source column the spec reads -> the kind of values its features take
    ("string", "int", "float", "hashable")."""
    columns = {}
    for f in sorted(spec.features.values(), key=lambda f: f.value_kind == "hashable"):
        for source in f.sources + ((f.weight,) if f.weight else ()):
            kind = "float" if source == f.weight and source not in f.sources else f.value_kind
            known = columns.setdefault(source, kind)
            if known != kind and not (kind == "hashable" and known in ("string", "int")):
                raise spec_lib.SpecError(f"column '{source}' feeds features of different kinds "
                                         f"({known} and {kind})")
    return columns


def _kind(item, kind: str):
    """The payload of an (kind, payload) pair of `kind`, else nothing."""
    if item[0] == kind:
        yield item[1]

class Select(beam.PTransform):
    """The payloads of ExtractCounts' outputs of one kind."""

    def __init__(self, kind: str, output_type=None):
        super().__init__()
        self._kind, self._output_type = kind, output_type

    def expand(self, extracted):
        select = beam.FlatMap(_kind, self._kind)
        return extracted | (select.with_output_types(self._output_type) if self._output_type else select)


class RankVocabularies(beam.PTransform):
    """{"counts": ((feature, shard), PartRef), "tally": (feature, Tally)} -> each token
    feature's (name, manifest entry, files): a shard's part files merged into exact
    counts and ranked into a run file, the runs merged into the vocabulary file."""

    def __init__(self, spec: spec_lib.Spec, work_dir: str, state_dir: str, keep_state: bool = False, base=None):
        """`base`: an update's base (pipelines/base.py), for the stable-index features."""
        super().__init__()
        self._spec, self._work_dir, self._state_dir, self._keep_state = spec, work_dir, state_dir, keep_state
        self._base = base

    def expand(self, inputs):
        spec, work_dir, keep_state, base = self._spec, self._work_dir, self._keep_state, self._base
        runs = (inputs["counts"]
                | "GroupShards" >> beam.GroupByKey()
                | "RankShards" >> beam.MapTuple(lambda key, refs: (key[0], rank_shard(
                    spec.features[key[0]], key[1], refs, work_dir, keep_state,
                    whole=_keeps_indices(spec.features[key[0]], base)))))
        tallies = inputs["tally"] | "TallyFeature" >> beam.CombinePerKey(MergeTallies())
        return ({"runs": runs, "tally": tallies}
                | "JoinFeature" >> beam.CoGroupByKey()
                | "WriteVocabulary" >> beam.Map(vocabulary_entry, spec, self._state_dir, keep_state, base, work_dir))


def _keeps_indices(feature: spec_lib.FeatureSpec, base) -> bool:
    """A stable-index feature in an update: its base's tokens keep their indices."""
    return base is not None and feature.index_policy == "stable"


class SummarizeNumeric(beam.PTransform):
    """((feature, group), (task index, NumericStats)) -> each numeric feature's (name,
    manifest entry, files): parts merged in task order, in groups of PARTS_PER_MERGE
    then per feature, so the result is canonical (see prepro.stats.numeric)."""

    def __init__(self, spec: spec_lib.Spec, state_dir: str, keep_state: bool = False):
        super().__init__()
        self._spec, self._state_dir, self._keep_state = spec, state_dir, keep_state

    def expand(self, parts):
        return (parts
                | "GroupParts" >> beam.GroupByKey()
                | "MergeParts" >> beam.MapTuple(lambda group, stats: (group[0], (group[1], merge_in_order(stats))))
                | "GroupMerged" >> beam.GroupByKey()
                | "WriteNumericState" >> beam.Map(finalize_numeric, self._spec, self._state_dir, self._keep_state))


class CheckStateless(beam.PTransform):
    """(feature, Tally) per batch -> each checked feature's (name, manifest entry, {})."""

    def __init__(self, spec: spec_lib.Spec):
        super().__init__()
        self._spec = spec

    def expand(self, tallies):
        return (tallies
                | "TallyChecked" >> beam.CombinePerKey(MergeTallies())
                | "FinalizeChecked" >> beam.Map(finalize_stateless, self._spec))


class CountRows(beam.PTransform):
    """((format, file), (rows, bytes)) per read task or bundle -> the same per file
    (("elements", None) for a PCollection's elements)."""

    def expand(self, rows):
        return rows | "RowsPerFile" >> beam.CombinePerKey(_sum_pairs)


def _sum_pairs(pairs):
    rows = size = 0
    for r, b in pairs:
        rows, size = rows + r, size + b
    return rows, size


class PickGoldenRows(beam.PTransform):
    """Golden-row candidates (key, canonical JSON) -> one list of the `count` distinct
    candidates of smallest key (pipelines/golden.py), in key order. Per key, not
    CombineGlobally: Beam 2.77's DaskRunner gives an empty global combine."""

    def __init__(self, count: int):
        super().__init__()
        self._count = count

    def expand(self, candidates):
        return (candidates
                | "Distinct" >> beam.Distinct()
                | "OneKey" >> beam.Map(lambda candidate: (None, candidate))
                | "Smallest" >> beam.combiners.Top.SmallestPerKey(self._count)
                | "Candidates" >> beam.MapTuple(lambda _, smallest: [tuple(c) for c in smallest]))


class WriteManifestCandidate(beam.PTransform):
    """{"features", "rows", "golden"} -> the manifest candidate, written with the golden
    rows into the work directory once every feature is done (`write_manifest`).
    `keep_state`: the golden candidates are kept too; `lineage`: the base's steps."""

    def __init__(self, spec: spec_lib.Spec, work_dir: str, keep_state: bool = False,
                 lineage: Optional[List[Dict]] = None, golden_limit: int = 0):
        super().__init__()
        self._args = (spec, work_dir, keep_state, lineage, golden_limit)

    def expand(self, parts):
        return (parts["features"].pipeline
                | "Once" >> beam.Create([None])
                | "Write" >> beam.FlatMap(write_manifest, beam.pvalue.AsList(parts["features"]),
                                          beam.pvalue.AsList(parts["rows"]),
                                          beam.pvalue.AsSingleton(parts["golden"], default_value=[]), *self._args))


def vocabulary_entry(item, spec: spec_lib.Spec, state_dir: str, keep_state: bool = False, base=None,
                     work_dir: Optional[str] = None):
    """Merges one feature's runs into its vocabulary file in `state_dir` (and their state
    runs into its kept token state); returns its manifest entry. A stable-index feature
    of an update (`base`) keeps its base's indices (`stable_ranking`)."""
    Metrics.counter(METRICS, "features_finalized").inc()
    name, grouped = item
    feature = spec.features[name]
    runs, tallies = grouped["runs"], grouped["tally"]
    tally = tallies[0]
    state_writer = state_files.StateWriter(state_dir, name)
    relpath, vocabulary_out = state_writer.open(state_files.VOCABULARY)
    counts_relpath, counts_out = state_writer.open(state_files.COUNTS)
    frequencies_relpath, frequencies_out = (state_writer.open(state_files.DOCUMENT_FREQUENCIES)
                                            if spec_lib.needs_document_frequencies(feature) else (None, None))
    with contextlib.ExitStack() as files:
        writer = VocabularyWriter(files.enter_context(vocabulary_out), files.enter_context(counts_out),
                                  files.enter_context(frequencies_out) if frequencies_out else None)
        token_type = pa.int64() if feature.is_integer else pa.binary()
        limit = spec_lib.max_learned_tokens(feature)
        ranking = (stable_ranking(runs, base.vocabulary(name), limit, token_type, work_dir, name)
                   if _keeps_indices(feature, base) else merged_ranking(runs, limit, token_type))
        for ranked in ranking:
            writer.add(ranked)
            failpoints.reach("state")  # a state file partly written
    if writer.size == 0:
        below = sum(r.below_thresholds for r in runs)
        raise InputError(f"no tokens to learn: {tally.rows} rows, {tally.missing} missing, {tally.values} values"
                         + (", all empty or mask/OOV tokens" if tally.values else "")
                         + (f", or below the thresholds ({below} tokens)" if below else ""), feature=name)
    occurrences = sum(r.occurrences for r in runs)
    figures = {
        "rows": tally.rows, "values": tally.values, "missing": tally.missing,
        "invalid_utf8_replaced": tally.invalid_utf8_replaced,
        "invalid_utf8_skipped": tally.invalid_utf8_skipped,
        **({"zero_weight": tally.zero_weight} if feature.weight is not None else {}),
        "documents": sum(r.documents for r in runs),
        "tokens_seen": sum(r.occurrences_all for r in runs),
        "special_tokens_seen": sum(r.occurrences_all for r in runs) - occurrences,
        "distinct_tokens": sum(r.distinct for r in runs),
        "below_thresholds": sum(r.below_thresholds for r in runs),
        "tokens_kept": writer.size,
        "coverage": round(writer.kept_occurrences / occurrences, 6) if occurrences else 0.0,
        "top_tokens": writer.top,
    }
    state = {"vocabulary_file": relpath, "vocabulary_size": writer.size, "documents": figures["documents"],
             "token_start": spec_lib.token_start(feature), "exceptions": writer.exceptions}
    files = {relpath: writer.vocabulary.file_entry(), counts_relpath: writer.counts.file_entry()}
    distribution = merged_count_distribution(runs)
    distribution_relpath = state_writer.write(state_files.COUNT_DISTRIBUTION,
                                              state_files.count_distribution_bytes(*distribution))
    files.update(state_writer.files)
    profile = {"counts_file": counts_relpath, "count_distribution_file": distribution_relpath,
               "count_distribution_rows": len(distribution[0])}
    if writer.frequencies is not None:
        state["document_frequencies_file"] = frequencies_relpath
        files[frequencies_relpath] = writer.frequencies.file_entry()
    if keep_state:
        state_relpath, state_out = state_writer.open(state_files.TOKEN_STATE)
        with state_out as out:
            kept = state_files.TokenStateWriter(out, token_type, feature.weight is not None)
            for table in merged_by_token(runs):
                kept.add(table)
                failpoints.reach("kept_state")  # the kept state partly written
            files[state_relpath] = kept.close()
        state.update(token_state_file=state_relpath, token_state_rows=kept.rows)
    return name, {**feature.to_dict(), "state": state, "figures": figures, "profile": profile}, files


def write_manifest(_, features, rows, golden, spec, work_dir, keep_state=False, lineage=None, golden_limit=0):
    """Writes the manifest candidate and the golden rows (the rows of the `golden`
    candidates) to the work directory; the publish step adds the golden outputs and
    publishes (`AnalyzeFeatures`). `keep_state`: the candidates are kept as a state file.
    `lineage`: an update's earlier steps (pipelines/base.py), recorded in the provenance."""
    sources = dict(rows)  # (format, file) -> (rows, bytes)
    total = sum(count for count, _ in sources.values())
    files = sorted((path, count, size) for (fmt, path), (count, size) in sources.items() if path is not None)
    formats = sorted({fmt for fmt, _ in sources}) or [lineage[-1]["input_format"] if lineage else "elements"]
    if total == 0 and not lineage:  # (an update may add no rows: it is then its base again)
        raise InputError(f"the inputs hold no rows: {[path for path, _, _ in files]}" if files else
                         "the PCollection holds no rows")
    features_entries, file_entries = {}, {}
    for name, entry, state in sorted(features, key=lambda f: f[0]):
        features_entries[name] = entry
        file_entries.update(state)
    missing = sorted(set(spec.features) - set(features_entries))
    if missing:
        raise InputError(f"features {missing} received no values")
    manifest = {
        "features": features_entries,  # each holds its spec entry: spec.to_dict() is their union
        "files": file_entries,
        "provenance": {
            "inputs": [{"path": path, "bytes": size, "rows": count} for path, count, size in files],
            "input_format": formats[0] if len(formats) == 1 else formats,
            "rows_read": total,
            "versions": _versions(),
            **({"lineage": lineage} if lineage else {}),
        },
    }
    if keep_state:
        data = state_files.golden_candidates_bytes(golden)
        fs.write_bytes(fs.join(work_dir, artifacts.STAGING_STATE_DIR, state_files.GOLDEN_CANDIDATES), data)
        file_entries[state_files.GOLDEN_CANDIDATES] = artifacts.file_entry(data)
        manifest["kept_state"] = {"golden_candidates_file": state_files.GOLDEN_CANDIDATES,
                                  "golden_candidates_limit": golden_limit}
    data = artifacts.manifest_bytes(manifest)
    fs.write_bytes(fs.join(work_dir, CANDIDATE), data)
    golden_rows = [json.loads(text) for _, text in golden]
    fs.write_bytes(fs.join(work_dir, GOLDEN_ROWS), json.dumps(golden_rows).encode("utf-8"))
    yield json.loads(data)  # as a reader of the file sees it


def _versions():
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for pkg in ("prepro", "apache-beam", "pyarrow", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out

