"""The analyze job, as Beam transforms a pipeline composes:

    rows | AnalyzeFeatures(spec="spec.yaml", output="gs://bucket/arts/")   # any PCollection
    p | ReadInputs(["data/*.csv"], "csv") | AnalyzeFeatures(...)            # files: the CLI

`AnalyzeFeatures` is the whole job after reading: extract per feature, count and spill,
rank shards, merge and write, then publish (pipelines/transforms.py has the stages).
`run_analyze` is the CLI's and `prepro.adapt`'s driver around the same transforms:
it locks the output for the whole run, checks the spec against Keras meanwhile,
records the golden rows and publishes.

Determinism: the inputs are sorted, every statistic merges associatively into a
canonical result, the ranking is a total order, golden rows are chosen by content, and
the manifest is canonical JSON without timestamps, so any worker count, file order,
batching or element form gives the same bytes (the approximate quantile sketch of
PCollection elements aside: see `AnalyzeFeatures`).
"""

import contextlib
import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import apache_beam as beam
from apache_beam.metrics import MetricsFilter

from pipelines import failpoints, keras_helper, progress as job_progress
from pipelines.base import Base, ReadBaseState
from pipelines.publish import OutputDirectory, job_work_dir
from pipelines import io as prepro_io
from pipelines.elements import MAX_BATCH_ROWS, ToBatches, drops_finish_bundle_outputs
from pipelines.errors import InputError
from pipelines.extract import counts_whole_batches
from pipelines.transforms import (CANDIDATE, DEFAULT_GOLDEN_ROWS, GOLDEN_CANDIDATES, GOLDEN_ROWS, METRICS,
                                  CheckStateless, CountRows, ExtractStatistics, PickGoldenRows, RankVocabularies,
                                  Select, SummarizeNumeric, WriteManifestCandidate, source_columns)
from pipelines.vocabulary import PartRef
from prepro import artifacts, fs, golden, spec as spec_lib, text

DEFAULT_SHARDS = 16
# In-process runs below this much input rank one shard: splitting costs more than it
# saves there (26 MB n-gram job: 6.0 s with 1 shard, 7.2 s with 16), while above it 16
# shards rank one at a time in less memory (609 MB, 10.9M distinct tokens: 42.0 s and
# 1.4 GB with 16, 52.3 s and 4.2 GB with 1).
SINGLE_SHARD_BYTES = 256 << 20


def single_shard_bytes(spec: spec_lib.Spec) -> int:
    """SINGLE_SHARD_BYTES over the widest n-gram squared: distinct n-grams grow with the
    input much faster than distinct words (the 263 MB bigram tf-idf job: 5.8 GB peak in
    one shard, 2.0 GB in 16, and faster), so an n-gram job splits at a quarter of it."""
    widths = [max(text.ngram_widths(f.options.get("ngrams"))) for f in spec.features.values()
              if f.is_text and f.options.get("ngrams") is not None]
    return SINGLE_SHARD_BYTES // max([1, *widths]) ** 2


class ReadInputs(beam.PTransform):
    """Input files (paths or globs, local or gs://) -> read tasks: a file, or a byte
    range of a big text / JSON Lines file (`io.plan_reads`), spread over workers by a
    Reshuffle. The files are read in AnalyzeFeatures' extract step, each task in file
    order, fused with its summaries, so rows never travel between workers."""

    def __init__(self, patterns: Sequence[str], fmt: str, part_bytes: int = prepro_io.PART_BYTES):
        super().__init__()
        if fmt not in prepro_io.FORMATS:
            raise InputError(f"unknown format {fmt!r}; choose one of {prepro_io.FORMATS}")
        if isinstance(patterns, str):
            patterns = [patterns]
        self.inputs = prepro_io.match_inputs(list(patterns))  # sorted: task indices never depend on their order
        self._tasks = prepro_io.plan_reads(self.inputs, fmt, part_bytes)

    def expand(self, pbegin):
        return (pbegin
                | "ReadTasks" >> beam.Create(self._tasks).with_output_types(prepro_io.ReadTask)
                | "SpreadTasks" >> beam.Reshuffle().with_output_types(prepro_io.ReadTask))


class AnalyzeResult(dict):
    """What AnalyzeFeatures returns: `result.manifest`, a PCollection of one element,
    the published artifact's manifest (a dict: its features, files and figures), once
    it is in place; for later steps of the pipeline."""

    @property
    def manifest(self) -> beam.PCollection:
        return self["manifest"]


class AnalyzeFeatures(beam.PTransform):
    """A PCollection of rows -> the artifacts of `spec` published at `output`.

    Elements: dicts (column -> value), Beam Rows, NamedTuples, dataclasses or pyarrow
    RecordBatches (see pipelines/elements.py for how values map to columns), or the
    read tasks of `ReadInputs`. `spec`: a path to a spec file, a dict, or a `Spec`.
    `output`: a local directory or gs:// prefix; the artifact there is replaced only
    once the new one is complete (pipelines/publish.py), and `result.manifest` then
    holds its manifest.

    On the same rows, the artifacts are byte-identical to the CLI's whatever the element
    form or batching, with two exceptions, both recorded in the manifest: its
    provenance (files and their row counts, or "elements"), and Discretization's
    approximate quantile sketch (the default `quantiles: sketch`), which depends on the
    order values meet: PCollection elements have none, so its boundaries are within
    the recorded rank-error bound of the CLI's, not identical. `quantiles: exact` is
    identical.

    While the pipeline runs it writes only under `output/.prepro-job-<id>/`; it takes
    the output's lock (the CLI's) only to publish, so a CLI job running into the same
    output makes it fail then, naming the holder, and the last one to publish wins.
    Keras checks the spec when the transform is applied (it imports TensorFlow there),
    and a worker computes the golden rows' outputs with Keras before publishing.

    `golden_rows`: raw rows the artifacts carry with their expected outputs (0: none).
    `num_shards`: slices each feature's distinct tokens are counted and ranked in.
    `max_batch_rows`: elements per batch at most; `batch_bytes`: input bytes per batch
    of a text or CSV file; `threads`: per worker, for the numeric features and long
    texts. None of them changes the result. `keep_state`: also write every feature's
    mergeable state (every distinct token with its counts, the exact sums, the exact
    values or the sketch, the golden candidates: docs/artifact-format.md). `base`: an
    artifact made with `keep_state` to update (pipelines/base.py): the result is the
    full run's over the base's rows and these together (the sketch's boundaries within
    its bound), and keeps state; checked when the transform is made (a BaseError).
    `publish=False` and `work_dir` are for a driver that locks and publishes itself
    (`run_analyze`): `result.manifest` is then the candidate in `work_dir`, and
    `progress` the path of its progress channel (pipelines/progress.py).
    """

    def __init__(self, spec: Union[str, Dict[str, Any], spec_lib.Spec], output: str, *,
                 golden_rows: int = DEFAULT_GOLDEN_ROWS, num_shards: int = DEFAULT_SHARDS,
                 max_batch_rows: int = MAX_BATCH_ROWS, batch_bytes: int = prepro_io.BATCH_BYTES,
                 threads: int = 1, keep_state: bool = False, base: Optional[str] = None, publish: bool = True,
                 work_dir: Optional[str] = None, progress: Optional[str] = None):
        super().__init__()
        self.spec = _as_spec(spec)
        spec_lib.check_callables(self.spec)
        self._columns = source_columns(self.spec)  # a SpecError now, not on a worker
        if not fs.is_remote(output):
            output = os.path.abspath(output)  # workers may run elsewhere on this machine
        if not isinstance(golden_rows, int) or isinstance(golden_rows, bool) or golden_rows < 0:
            raise ValueError(f"golden_rows must be an integer >= 0, got {golden_rows!r}")
        if not isinstance(num_shards, int) or isinstance(num_shards, bool) or num_shards < 1:
            raise ValueError(f"num_shards must be an integer >= 1, got {num_shards!r}")
        self.output, self._publish = output, publish
        self.work_dir = work_dir or job_work_dir(output)
        self._golden_rows, self._num_shards = golden_rows, num_shards
        self._max_batch_rows, self._batch_bytes, self._threads = max_batch_rows, batch_bytes, threads
        self._progress = progress
        # Checked now, before the pipeline runs (a BaseError naming the base and what is wrong).
        if base is not None and not isinstance(base, Base):
            base = Base(base, self.spec, golden_rows, GOLDEN_CANDIDATES * golden_rows)  # "" too: refused
        self.base = base
        self._keep_state = bool(keep_state) or self.base is not None  # an update's result is a base too

    def expand(self, rows):
        if not rows.is_bounded:
            raise ValueError("AnalyzeFeatures needs a bounded PCollection (a batch pipeline): its statistics are "
                             "over all the rows")
        spec, work_dir, state_dir = self.spec, self.work_dir, fs.join(self.work_dir, artifacts.STAGING_STATE_DIR)
        if self._publish:
            from prepro import verdict_cache
            verdict_cache.check(spec, spec_lib.custom_objects(spec))  # a SpecError before the pipeline runs
        if rows.element_type is not prepro_io.ReadTask:
            rows = rows | "ToBatches" >> ToBatches(self._columns, self._max_batch_rows,
                                                   prepro_io.features_of_columns(spec.features.values()))
        extracted = rows | "Extract" >> beam.ParDo(
            ExtractStatistics(spec, self._num_shards, work_dir, self._batch_bytes, self._threads, self._golden_rows,
                              per_batch=drops_finish_bundle_outputs(rows.pipeline), progress=self._progress))

        base = (rows.pipeline | "ReadBase" >> ReadBaseState(self.base, spec, self._num_shards, work_dir)
                if self.base else None)

        def select(kind: str, output_type=None):
            """The extracted payloads of one kind, with the base's when updating one."""
            selected = extracted | f"Select{kind.title()}" >> Select(kind, output_type)
            if base is None or kind not in base:
                return selected
            flatten = beam.Flatten()
            return (selected, base[kind]) | f"WithBase{kind.title()}" >> (
                flatten.with_output_types(output_type) if output_type else flatten)

        token_features = ({"counts": select(ExtractStatistics.COUNTS, Tuple[Tuple[str, int], PartRef]),
                           "tally": select(ExtractStatistics.TALLY)}
                          | "RankVocabularies" >> RankVocabularies(spec, work_dir, state_dir, self._keep_state,
                                                                   self.base))
        numeric_features = (select(ExtractStatistics.NUMERIC)
                            | "SummarizeNumeric" >> SummarizeNumeric(spec, state_dir, self._keep_state))
        checked_features = select(ExtractStatistics.CHECKED) | "CheckStateless" >> CheckStateless(spec)
        features = (token_features, numeric_features, checked_features) | "AllFeatures" >> beam.Flatten()
        candidate = ({"features": features,
                      "rows": select(ExtractStatistics.ROWS) | "CountRows" >> CountRows(),
                      "golden": select(ExtractStatistics.GOLDEN) | "PickGoldenRows" >> PickGoldenRows(
                          GOLDEN_CANDIDATES * (self._golden_rows or 1))}
                     | "Manifest" >> WriteManifestCandidate(spec, work_dir, self._keep_state,
                                                            self.base.lineage if self.base else None,
                                                            GOLDEN_CANDIDATES * self._golden_rows))
        if not self._publish:
            return AnalyzeResult(manifest=candidate)
        return AnalyzeResult(manifest=candidate | "Publish" >> beam.ParDo(
            PublishArtifact(spec, self.output, work_dir, self._golden_rows, self.base)))


class PublishArtifact(beam.DoFn):
    """The manifest candidate -> the published manifest: golden rows recorded with
    Keras beside the staged state files, then, under the output's lock, the state
    directory moved into place and the manifest committed (pipelines/publish.py)."""

    def __init__(self, spec: spec_lib.Spec, output: str, work_dir: str, golden_rows: int, base: Optional[Base] = None):
        self._spec, self._output, self._work_dir, self._golden_rows = spec, output, work_dir, golden_rows
        self._base = base

    def process(self, manifest):
        rows = json.loads(fs.read_bytes(fs.join(self._work_dir, GOLDEN_ROWS)))
        if rows and self._golden_rows:
            staged = {**manifest, "state_dir": artifacts.STAGING_STATE_DIR}
            manifest = golden.record(self._work_dir, staged, rows, self._golden_rows,
                                     spec_lib.custom_objects(self._spec))
            failpoints.reach("golden")
        with OutputDirectory(self._output, work_dir=self._work_dir) as out:
            if self._base is not None and self._base.root == self._output:
                # Updated in place, the base must still be what was merged: another job
                # that published into it meanwhile would otherwise lose its rows.
                self._base.check_unchanged()
            out.publish(manifest)
        yield artifacts.read_manifest(self._output)


def _as_spec(spec) -> spec_lib.Spec:
    if isinstance(spec, spec_lib.Spec):
        return spec
    if isinstance(spec, dict):
        return spec_lib.spec_from_dict(spec)
    if isinstance(spec, (str, os.PathLike)):
        return spec_lib.load_spec(os.fspath(spec))
    raise TypeError(f"spec must be a path, a dict or a prepro.Spec, not {type(spec).__name__}")


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


def run_analyze(spec: spec_lib.Spec, patterns: List[str], fmt: str, output: str,
                pipeline_args: Optional[List[str]] = None, num_shards: Optional[int] = None,
                batch_bytes: Optional[int] = None, part_bytes: Optional[int] = None,
                golden_rows: int = DEFAULT_GOLDEN_ROWS, counters: Optional[Dict[str, int]] = None,
                allow_unknown_beam_options: bool = False, keep_state: bool = False,
                base: Optional[str] = None,
                progress: Union[None, bool, Callable[[job_progress.Update], None]] = None) -> Dict:
    """Runs the job to completion and returns the manifest it published.

    `output` is locked while the job runs (a second job into it fails at once), and the
    artifact there is replaced only when the new one is complete (pipelines/publish.py):
    a job that fails or is killed leaves the previous artifact as it was.
    `num_shards`: how many slices the distinct tokens of a feature are counted and
    ranked in (default: 1 for an in-process run under single_shard_bytes(spec), else
    DEFAULT_SHARDS). `batch_bytes`:
    input bytes per batch (default: 64 MB in-process, 8 MB there when its threads count
    whole batches (`extract.counts_whole_batches`), else 16 MB). The result never
    depends on either. `part_bytes`: bytes per part of a split text/JSON Lines file
    (default `io.PART_BYTES`, whatever the runner: numeric statistics merge per part,
    so their last bits depend on it; token counts never do). `golden_rows`: how many raw
    rows the artifacts carry with their expected outputs (computed at the end, without
    TensorFlow where `prepro.golden_numpy` covers every feature, else with Keras; when
    TensorFlow is not loaded yet, a helper process imports it while the job runs, unless
    Keras's verdict on the spec is cached (`prepro.verdict_cache`) and no feature needs
    Keras; 0 skips them). `counters`, if given, is filled with the job's Beam counters (rows and
    input bytes read, batches, read tasks, part files of partial counts written,
    features finalized) where the runner reports them. A pipeline option Beam does not
    know is an error before anything is written unless `allow_unknown_beam_options`
    (`runners.check_pipeline_options`). `keep_state`, `base`: see `AnalyzeFeatures`
    (the base is checked before the output is locked). `progress`: off by default (a
    notebook or a pipeline is not written to); True shows it on stderr (a bar on a
    terminal, plain lines elsewhere: `progress.display_for`); a callable is called from
    a thread about 4 times a second with a `progress.Update` (input bytes read of the
    planned total, rate, what runs after the reading), and once more when the job ends.
    """
    from pipelines import runners
    if fmt not in prepro_io.FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of {prepro_io.FORMATS}")
    spec_lib.check_callables(spec)
    source_columns(spec)
    inputs = prepro_io.match_inputs(patterns)
    checked_base = Base(base, spec, golden_rows, GOLDEN_CANDIDATES * golden_rows) if base is not None else None
    if checked_base is not None:
        checked_base.check_new_inputs(inputs)
    # An update's work is its new inputs and its base's token states (merged, ranked and
    # rewritten): both size the runner and the shards, so a big base is not ranked in one.
    work_bytes = sum(i["bytes"] for i in inputs) + (checked_base.token_state_bytes if checked_base else 0)
    plan = runners.make_runner(pipeline_args or [], total_bytes=work_bytes,
                               allow_unknown_options=allow_unknown_beam_options)
    if num_shards is None:
        num_shards = 1 if plan.single_process and work_bytes < single_shard_bytes(spec) else DEFAULT_SHARDS
    # The spec checked against Keras (cached; else in a helper process: meanwhile).
    helper = keras_helper.KerasHelper(spec, golden_rows=golden_rows > 0)
    display = _display(progress, plan)
    try:
        with OutputDirectory(output) as out, _tracker(display, inputs, base) as tracker:
            if checked_base is not None:
                checked_base.check_unchanged()  # nothing publishes into a locked output from here on
            helper.cancel_into(keras_helper.Cancellation(out.work_dir))
            try:
                p = beam.Pipeline(runner=plan.runner, options=plan.options)
                _ = (p
                     | "ReadInputs" >> ReadInputs(patterns, fmt, part_bytes or prepro_io.PART_BYTES)
                     | "AnalyzeFeatures" >> AnalyzeFeatures(
                         spec, output, golden_rows=golden_rows, num_shards=num_shards,
                         batch_bytes=batch_bytes or plan.batch_bytes(counts_whole_batches(spec)),
                         threads=plan.extract_threads,
                         keep_state=keep_state, base=checked_base, publish=False, work_dir=out.work_dir,
                         progress=tracker.channel if tracker else None))
                result = p.run()
                if tracker and plan.name != "FnApiRunner":  # FnApiRunner's run() returns when done
                    tracker.watch(result)
                result.wait_until_finish()
                if tracker:
                    tracker.watch(None)
                if counters is not None:
                    counters.update(_counters(result))
                helper.verdict()
                manifest = json.loads(fs.read_bytes(fs.join(out.work_dir, CANDIDATE)))
                rows = json.loads(fs.read_bytes(fs.join(out.work_dir, GOLDEN_ROWS)))
                if rows:  # recorded beside the staged state files, with layers built from them
                    if tracker:
                        tracker.stage(job_progress.GOLDEN)
                    staged = {**manifest, "state_dir": artifacts.STAGING_STATE_DIR}
                    manifest = helper.record(out.work_dir, staged, rows, golden_rows)
                    failpoints.reach("golden")
            except Exception as e:
                raise runners.unwrap_error(e) from None
            out.publish(manifest)
    finally:
        helper.close()
        if display is not None and hasattr(display, "close"):
            display.close()
    return artifacts.read_manifest(output)


def _display(progress, plan) -> Optional[Callable[[job_progress.Update], None]]:
    """What `run_analyze`'s `progress` asks for (None: nothing)."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return job_progress.display_for(remote=not plan.workers_here)
    if callable(progress):
        return progress
    raise TypeError(f"progress must be True, False, None or a callable, not {type(progress).__name__}")


def _tracker(display, inputs, base):
    """The job's progress tracker, or nothing (None) when no one shows it."""
    if display is None:
        return contextlib.nullcontext()
    return job_progress.Tracker(sum(i["bytes"] for i in inputs), len(inputs), display, base=base)
