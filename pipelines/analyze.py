"""The analyze job: files -> Arrow batches -> sharded exact counts -> ranked vocabularies
-> artifact files -> manifest (last).

    prepro analyze --spec spec.yaml --input 'data/*.csv' --format csv --output artifacts/

The stages are composite transforms (pipelines/transforms.py); this module composes
them and runs the job: lock the output, run the pipeline, record the golden rows,
publish.

Determinism: the inputs are sorted, every statistic merges associatively into a
canonical result, the ranking is a total order, and the manifest is canonical JSON
without timestamps, so any worker count or file order gives the same bytes.
"""

import json
from typing import Dict, List, Optional, Tuple

import apache_beam as beam
from apache_beam.metrics import MetricsFilter

from pipelines import failpoints, keras_helper, publish
from pipelines import io as prepro_io
from pipelines.errors import InputError
from pipelines.transforms import (CANDIDATE, DEFAULT_GOLDEN_ROWS, GOLDEN_CANDIDATES, GOLDEN_ROWS, METRICS,
                                  CheckStateless, CountRows, ExtractCounts, PickGoldenRows, RankVocabularies,
                                  ReadAndExtract, Select, SummarizeNumeric, WriteManifestCandidate)
from pipelines.vocabulary import PartRef
from prepro import artifacts, fs, spec as spec_lib

DEFAULT_SHARDS = 16
# In-process runs below this much input rank one shard: splitting costs more than it
# saves there (26 MB n-gram job: 6.0 s with 1 shard, 7.2 s with 16), while above it 16
# shards rank one at a time in less memory (609 MB, 10.9M distinct tokens: 42.0 s and
# 1.4 GB with 16, 52.3 s and 4.2 GB with 1).
SINGLE_SHARD_BYTES = 256 << 20


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


def build_pipeline(p: beam.Pipeline, spec: spec_lib.Spec, inputs: List[Dict], fmt: str, state_dir: str,
                   work_dir: str, num_shards: int = DEFAULT_SHARDS,
                   batch_bytes: int = prepro_io.BATCH_BYTES, threads: int = 1,
                   part_bytes: int = prepro_io.PART_BYTES, golden_rows: int = 0):
    """The job as the Dataflow graph shows it (pipelines/transforms.py): read and
    extract, then one branch per kind of statistic, then the manifest candidate."""
    extract = ExtractCounts(spec, fmt, _source_columns(spec), batch_bytes, num_shards, work_dir, threads, golden_rows)
    extracted = p | "ReadAndExtract" >> ReadAndExtract(prepro_io.plan_reads(inputs, fmt, part_bytes), extract)

    def select(kind: str, output_type=None):
        return extracted | f"Select{kind.title()}" >> Select(kind, output_type)

    token_features = ({"counts": select(ExtractCounts.COUNTS, Tuple[Tuple[str, int], PartRef]),
                       "tally": select(ExtractCounts.TALLY)}
                      | "RankVocabularies" >> RankVocabularies(spec, work_dir, state_dir))
    numeric_features = select(ExtractCounts.NUMERIC) | "SummarizeNumeric" >> SummarizeNumeric(spec, state_dir)
    checked_features = select(ExtractCounts.CHECKED) | "CheckStateless" >> CheckStateless(spec)
    features = (token_features, numeric_features, checked_features) | "AllFeatures" >> beam.Flatten()
    return ({"features": features,
             "rows": select(ExtractCounts.ROWS) | "CountRows" >> CountRows(),
             "golden": select(ExtractCounts.GOLDEN) | "PickGoldenRows" >> PickGoldenRows(
                 GOLDEN_CANDIDATES * (golden_rows or 1))}
            | "Manifest" >> WriteManifestCandidate(spec, inputs, fmt, work_dir))


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
    (default `io.PART_BYTES`, whatever the runner: numeric statistics merge per part,
    so their last bits depend on it; token counts never do). `golden_rows`: how many raw
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
