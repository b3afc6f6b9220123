"""The analyze job: files -> Arrow batches -> sharded exact counts -> ranked vocabularies
-> artifact files -> manifest (last).

    prepro analyze --spec spec.yaml --input 'data/*.csv' --format csv --output artifacts/

Determinism: the inputs are sorted, every statistic merges associatively into a
canonical result, the ranking is a total order, and the manifest is canonical JSON
without timestamps, so any worker count or file order gives the same bytes.
"""

import contextlib
import json
import logging
import platform
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics, MetricsFilter
import pyarrow as pa

from pipelines import failpoints, keras_helper, publish
from pipelines import io as prepro_io
from pipelines.combiners import MergeTallies
from pipelines.checks import checked_tally, finalize_stateless
from pipelines.errors import InputError
from pipelines.extract import Threads, feature_counts
from pipelines.golden import candidate_rows
from pipelines.numeric import add_batch, new_stats
from pipelines.numeric_state import finalize_numeric
from pipelines.vocabulary import PartRef, VocabularyWriter, merged_ranking, rank_shard, write_parts
from prepro import artifacts, fs, spec as spec_lib, state_files
from prepro.stats import TokenCounts
from prepro.stats.numeric import merge_in_order

DEFAULT_SHARDS = 16
# In-process runs below this much input rank one shard: splitting costs more than it
# saves there (26 MB n-gram job: 6.0 s with 1 shard, 7.2 s with 16), while above it 16
# shards rank one at a time in less memory (609 MB, 10.9M distinct tokens: 42.0 s and
# 1.4 GB with 16, 52.3 s and 4.2 GB with 1).
SINGLE_SHARD_BYTES = 256 << 20
METRICS = "prepro"  # namespace of the job's Beam counters (Dataflow shows them live)
PROGRESS = logging.getLogger("prepro.progress")  # one line per read task (the CLI prints them)
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


class ExtractCounts(beam.DoFn):
    """Per read task (a file, or a part of a big one), its batches in file order.
    Emits (kind, payload) pairs that `build_pipeline` splits by kind (`_kind`): Beam's
    DaskRunner (2.77) sends tagged outputs to the main output, so none are used.
    Per task: every token feature's counts, merged over its batches, written as a part
    file split into shards by token hash (the largest early, when the task's pending
    counts outgrow PENDING_COUNT_BYTES); a reference per shard.
    Per task: every numeric feature's statistics, finished and keyed by the task, so
    parts merge in a canonical order (see prepro.stats.numeric). Per batch, for the
    features with nothing to learn: their checked input's figures."""

    COUNTS = "counts"
    TALLY = "tally"
    ROWS = "rows"
    NUMERIC = "numeric"
    CHECKED = "checked"
    GOLDEN = "golden"

    def __init__(self, spec: spec_lib.Spec, fmt: str, columns: Dict[str, str], batch_bytes: int,
                 num_shards: int, work_dir: str, threads: int = 1, golden_rows: int = 0):
        self._spec = spec
        self._work_dir = work_dir
        self._golden_rows = golden_rows
        self._read = (fmt, columns, batch_bytes)
        self._num_shards = num_shards
        self._threads = threads

    def setup(self):
        self._cancellation = keras_helper.Cancellation(self._work_dir)
        self._pool = Threads(self._threads)

    def teardown(self):
        self._pool.close()

    def process(self, task: prepro_io.ReadTask):
        features = sorted(self._spec.features.items())
        numeric = {name: new_stats(f) for name, f in features if f.is_numeric}
        pending: Dict[str, TokenCounts] = {}
        rows = 0
        batches = prepro_io.read_batches(task, *self._read,
                                         features_of=prepro_io.features_of_columns(self._spec.features.values()))
        for number, batch in enumerate(batches):
            rows += batch.table.num_rows
            Metrics.counter(METRICS, "rows_read").inc(batch.table.num_rows)
            Metrics.counter(METRICS, "batches").inc()
            yield (self.ROWS, (batch.path, batch.table.num_rows))
            failpoints.reach("read")
            self._cancellation.raise_if_cancelled()  # the spec refused by Keras meanwhile
            try:
                # One thread per numeric feature: each sees its batches in file order, and
                # NumPy and tfx-bsl's sketch release the GIL (2 threads: ~1.9x on the adds).
                self._pool.map(lambda item: add_batch(numeric[item[0]], batch, item[1]),
                               [(n, f) for n, f in features if f.is_numeric])
            except InputError as e:
                raise prepro_io.with_file_rows(e, batch.path, batch.part_offset) from None
            for name, feature in features:
                if feature.is_numeric:
                    continue
                try:
                    if feature.is_stateless:
                        yield (self.CHECKED, (name, checked_tally(batch, feature)))
                        continue
                    counts, tally = feature_counts(batch, feature, self._pool)
                except InputError as e:
                    raise prepro_io.with_file_rows(e, batch.path, batch.part_offset) from None
                yield (self.TALLY, (name, tally))
                pending[name] = pending[name].merge(counts) if name in pending else counts
                while sum(c.nbytes for c in pending.values()) > PENDING_COUNT_BYTES:
                    largest = max(sorted(pending), key=lambda n: pending[n].nbytes)
                    yield from self._spill(largest, pending.pop(largest))
            # After the batch's values passed every feature's checks, so candidates hold
            # only values the features accept.
            if number == 0 and self._golden_rows:
                for candidate in candidate_rows(batch, task.index, self._read[1], self._spec,
                                                GOLDEN_CANDIDATES * self._golden_rows):
                    yield (self.GOLDEN, candidate)
        for name in sorted(pending):
            yield from self._spill(name, pending[name])
        Metrics.counter(METRICS, "input_bytes_read").inc(task.size)
        Metrics.counter(METRICS, "read_tasks_done").inc()
        PROGRESS.info("read %s bytes %s..%s: %d rows", task.path, task.start, task.end or "end", rows)
        for name, stats in numeric.items():
            group = (name, task.index // PARTS_PER_MERGE)
            yield (self.NUMERIC, (group, (task.index, stats.finish())))

    def _spill(self, name: str, counts: TokenCounts):
        Metrics.counter(METRICS, "part_files_written").inc()
        for shard, ref in write_parts(name, counts, self._num_shards, self._work_dir):
            yield self.COUNTS, ((name, shard), ref)
        failpoints.reach("count")


def _counters(result) -> Dict[str, int]:
    """The job's counters by name, summed over steps (committed where the runner has them)."""
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(METRICS))["counters"]
    except (NotImplementedError, AttributeError):  # runners without metrics (DaskRunner)
        return {}
    out: Dict[str, int] = {}
    for counter in found:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + int(value or 0)
    return out


def _kind(item, kind: str):
    """The payload of an (kind, payload) pair of `kind`, else nothing."""
    if item[0] == kind:
        yield item[1]


def _source_columns(spec: spec_lib.Spec) -> Dict[str, str]:
    columns = {}
    for f in sorted(spec.features.values(), key=lambda f: f.value_kind == "hashable"):
        kind = f.value_kind
        for source in f.sources + ((f.weight,) if f.is_numeric and f.weight else ()):
            known = columns.setdefault(source, kind)
            if known != kind and not (kind == "hashable" and known in ("string", "int")):
                raise spec_lib.SpecError(f"column '{source}' feeds features of different kinds "
                                         f"({known} and {kind})")
    return columns


def finalize_feature(item, spec: spec_lib.Spec, state_dir: str):
    """Merges one feature's runs into its vocabulary file in `state_dir`; returns its
    manifest entry."""
    Metrics.counter(METRICS, "features_finalized").inc()
    name, grouped = item
    feature = spec.features[name]
    runs, tallies = grouped["runs"], grouped["tally"]
    tally = tallies[0]
    state_writer = state_files.StateWriter(state_dir, name)
    relpath, vocabulary_out = state_writer.open(state_files.VOCABULARY)
    frequencies_relpath, frequencies_out = (state_writer.open(state_files.DOCUMENT_FREQUENCIES)
                                            if spec_lib.needs_document_frequencies(feature) else (None, None))
    with contextlib.ExitStack() as files:
        writer = VocabularyWriter(files.enter_context(vocabulary_out),
                                  files.enter_context(frequencies_out) if frequencies_out else None)
        token_type = pa.int64() if feature.is_integer else pa.binary()
        for ranked in merged_ranking(runs, spec_lib.max_learned_tokens(feature), token_type):
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
    files = {relpath: writer.vocabulary.file_entry()}
    if writer.frequencies is not None:
        state["document_frequencies_file"] = frequencies_relpath
        files[frequencies_relpath] = writer.frequencies.file_entry()
    return name, {**feature.to_dict(), "state": state, "figures": figures}, files


def write_manifest(_, features, rows, golden, spec, inputs, fmt, work_dir):
    """Writes the manifest candidate and the golden rows to the work directory; the
    driver adds the golden outputs and publishes (`run_analyze`)."""
    row_counts = dict(rows)
    total = sum(row_counts.values())
    if total == 0:
        raise InputError(f"the inputs hold no rows: {[i['path'] for i in inputs]}")
    files, feature_entries = {}, {}
    for name, entry, file_entries in sorted(features, key=lambda f: f[0]):
        feature_entries[name] = entry
        files.update(file_entries)
    missing = sorted(set(spec.features) - set(feature_entries))
    if missing:
        raise InputError(f"features {missing} received no values")
    manifest = {
        "spec": spec.to_dict(),
        "features": feature_entries,
        "files": files,
        "provenance": {
            "inputs": [{**i, "rows": row_counts.get(i["path"], 0)} for i in inputs],
            "input_format": fmt,
            "rows_read": total,
            "versions": _versions(),
        },
    }
    fs.write_bytes(fs.join(work_dir, CANDIDATE), artifacts.manifest_bytes(manifest))
    fs.write_bytes(fs.join(work_dir, GOLDEN_ROWS), json.dumps([row for _, row in golden]).encode("utf-8"))
    yield manifest


def _versions():
    import importlib.metadata as md
    out = {"python": platform.python_version()}
    for pkg in ("prepro", "apache-beam", "pyarrow", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def build_pipeline(p: beam.Pipeline, spec: spec_lib.Spec, inputs: List[Dict], fmt: str, state_dir: str,
                   work_dir: str, num_shards: int = DEFAULT_SHARDS,
                   batch_bytes: int = prepro_io.BATCH_BYTES, threads: int = 1,
                   part_bytes: int = prepro_io.PART_BYTES, golden_rows: int = 0):
    columns = _source_columns(spec)
    tasks = prepro_io.plan_reads(inputs, fmt, part_bytes)
    extracted = (p
                 | "Inputs" >> beam.Create(tasks)
                 | "SpreadFiles" >> beam.Reshuffle()
                 | "ReadAndExtract" >> beam.ParDo(ExtractCounts(spec, fmt, columns, batch_bytes, num_shards, work_dir, threads,
                                                                golden_rows)))

    def kind(name: str, output_type=None):
        select = beam.FlatMap(_kind, name)
        return extracted | f"Select{name.title()}" >> (select.with_output_types(output_type) if output_type else select)

    runs = (kind(ExtractCounts.COUNTS, Tuple[Tuple[str, int], PartRef])
            | "GroupShards" >> beam.GroupByKey()
            | "RankShards" >> beam.MapTuple(lambda key, refs: (key[0], rank_shard(spec.features[key[0]], key[1],
                                                                                   refs, work_dir))))
    tallies = kind(ExtractCounts.TALLY) | "Tally" >> beam.CombinePerKey(MergeTallies())
    token_features = (({"runs": runs, "tally": tallies})
                      | "JoinFeature" >> beam.CoGroupByKey()
                      | "Finalize" >> beam.Map(finalize_feature, spec, state_dir))
    numeric_features = (kind(ExtractCounts.NUMERIC)
                        | "GroupParts" >> beam.GroupByKey()
                        | "MergeParts" >> beam.MapTuple(lambda group, parts: (group[0], (group[1], merge_in_order(parts))))
                        | "GroupMerged" >> beam.GroupByKey()
                        | "FinalizeNumeric" >> beam.Map(finalize_numeric, spec, state_dir))
    checked_features = (kind(ExtractCounts.CHECKED)
                        | "TallyChecked" >> beam.CombinePerKey(MergeTallies())
                        | "FinalizeChecked" >> beam.Map(finalize_stateless, spec))
    features = (token_features, numeric_features, checked_features) | "AllFeatures" >> beam.Flatten()
    rows = kind(ExtractCounts.ROWS) | "RowsPerFile" >> beam.CombinePerKey(sum)
    # Per key, not CombineGlobally: Beam 2.77's DaskRunner gives an empty global combine.
    golden = (kind(ExtractCounts.GOLDEN)
              | "OneKey" >> beam.Map(lambda candidate: (None, candidate))
              | "GoldenRows" >> beam.combiners.Top.SmallestPerKey(GOLDEN_CANDIDATES * (golden_rows or 1),
                                                                  key=lambda c: c[0])
              | "Candidates" >> beam.Values())
    return (p
            | "Once" >> beam.Create([None])
            | "Manifest" >> beam.FlatMap(write_manifest, beam.pvalue.AsList(features),
                                         beam.pvalue.AsList(rows), beam.pvalue.AsSingleton(golden, default_value=[]), spec,
                                         inputs, fmt, work_dir))


def run_analyze(spec: spec_lib.Spec, patterns: List[str], fmt: str, output: str,
                pipeline_args: Optional[List[str]] = None, num_shards: Optional[int] = None,
                batch_bytes: Optional[int] = None, part_bytes: Optional[int] = None,
                golden_rows: int = DEFAULT_GOLDEN_ROWS, counters: Optional[Dict[str, int]] = None,
                allow_unknown_beam_options: bool = False) -> Dict:
    """Runs the job to completion and returns the manifest it published.

    `output` is locked while the job runs (a second job into it fails at once), and the
    artifact there is replaced only when the new one is complete (pipelines/publish.py):
    a job that fails or is killed leaves the previous artifact as it was.
    `num_shards`: how many slices the distinct tokens of a feature are counted and
    ranked in (default: 1 for an in-process run under SINGLE_SHARD_BYTES, else
    DEFAULT_SHARDS). `batch_bytes`:
    input bytes per batch (default: 64 MB in-process, else 16 MB). The result never
    depends on either. `part_bytes`: bytes per part of a split text/JSON Lines file
    (default `io.PART_BYTES`, whatever the runner: quantile sketches merge per part, so
    their last bits depend on it; token counts and moments never do). `golden_rows`: how many raw
    rows the artifacts carry with their expected outputs (computed with Keras at the end;
    when TensorFlow is not loaded yet, a helper process imports it while the job runs;
    0 skips it). `counters`, if given, is filled with the job's Beam counters (rows and
    input bytes read, batches, read tasks, part files of partial counts written,
    features finalized) where the runner reports them. A pipeline option Beam does not
    know is an error before anything is written unless `allow_unknown_beam_options`
    (`runners.check_pipeline_options`).
    """
    from pipelines import runners
    if fmt not in prepro_io.FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {prepro_io.FORMATS}")
    spec_lib.check_callables(spec)
    inputs = prepro_io.match_inputs(patterns)
    plan = runners.make_runner(pipeline_args or [], total_bytes=sum(i["bytes"] for i in inputs),
                               allow_unknown_options=allow_unknown_beam_options)
    if num_shards is None:
        small = sum(i["bytes"] for i in inputs) < SINGLE_SHARD_BYTES
        num_shards = 1 if plan.single_process and small else DEFAULT_SHARDS
    helper = keras_helper.KerasHelper(spec)  # the spec checked against Keras (in a helper process: meanwhile)
    try:
        with publish.OutputDirectory(output) as out:
            helper.cancel_into(keras_helper.Cancellation(out.work_dir))
            try:
                p = beam.Pipeline(runner=plan.runner, options=plan.options)
                build_pipeline(p, spec, inputs, fmt, out.staging, out.work_dir, num_shards,
                               batch_bytes or plan.batch_bytes, plan.extract_threads,
                               part_bytes or prepro_io.PART_BYTES, golden_rows)
                result = p.run()
                result.wait_until_finish()
                if counters is not None:
                    counters.update(_counters(result))
                helper.verdict()
                manifest = json.loads(fs.read_bytes(fs.join(out.work_dir, CANDIDATE)))
                rows = json.loads(fs.read_bytes(fs.join(out.work_dir, GOLDEN_ROWS)))
                if rows:  # recorded beside the staged state files, with layers built from them
                    staged = {**manifest, "state_dir": artifacts.STAGING_STATE_DIR}
                    manifest = helper.record(out.work_dir, staged, rows, golden_rows)
                    failpoints.reach("golden")
            except Exception as e:
                raise runners.unwrap_error(e) from None
            out.publish(manifest)
    finally:
        helper.close()
    return artifacts.read_manifest(output)
