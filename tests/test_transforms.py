"""Each stage of the analyze job (pipelines/transforms.py) on its own, in a real Beam
TestPipeline on the FnApiRunner, its output checked with `assert_that`."""

import json
from fractions import Fraction

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
import numpy as np
import pyarrow as pa

from pipelines import io as prepro_io
from pipelines.analyze import ReadInputs
from pipelines.elements import ToBatches
from pipelines.extract import Tally
from pipelines.transforms import (CANDIDATE, CheckStateless, CountRows, ExtractStatistics, PickGoldenRows,
                                  RankVocabularies, Select, SummarizeNumeric, WriteManifestCandidate,
                                  source_columns)
from pipelines.vocabulary import write_parts
from prepro import artifacts, fs, spec as spec_lib, state_files
from prepro.stats import TokenCounts
from prepro.stats.numeric import NumericStats

SPEC = spec_lib.spec_from_dict({"features": {
    "word": {"source": "word", "layer": "StringLookup"},
    "fare": {"source": "fare", "layer": "Normalization"},
    "bucket": {"source": "word", "layer": "Hashing", "config": {"num_bins": 4}}}})


def pipeline():
    return test_pipeline.TestPipeline(runner=FnApiRunner())


def test_read_inputs_plans_sorted_tasks_spread_over_workers(tmp_path):
    for name in ("b.csv", "a.csv"):
        (tmp_path / name).write_text("word,fare\na,1\n")
    with pipeline() as p:
        tasks = p | ReadInputs([str(tmp_path / "*.csv")], "csv")
        assert tasks.element_type is prepro_io.ReadTask
        assert_that(tasks | beam.Map(lambda t: (t.path.rsplit("/", 1)[1], t.index, t.fmt)),
                    equal_to([("a.csv", 0, "csv"), ("b.csv", 1, "csv")]))


def _select_all(extracted):
    rows = extracted | "Rows" >> Select(ExtractStatistics.ROWS)
    tallies = (extracted | "Tally" >> Select(ExtractStatistics.TALLY)
               | "TallyFigures" >> beam.MapTuple(lambda name, t: (name, (t.rows, t.values, t.missing)))
               | "SumTallies" >> beam.CombinePerKey(lambda ts: tuple(map(sum, zip(*ts))))
               | "Flat" >> beam.MapTuple(lambda name, t: (name, *t)))
    checked = (extracted | "Checked" >> Select(ExtractStatistics.CHECKED)
               | "CheckedValues" >> beam.MapTuple(lambda n, t: (n, t.values)) | "SumChecked" >> beam.CombinePerKey(sum))
    numeric = (extracted | "Numeric" >> Select(ExtractStatistics.NUMERIC)
               | "NumericFigures" >> beam.MapTuple(lambda group, part: (group[0], part[1].counters.values,
                                                                        part[1].counters.missing)))
    shards = extracted | "Counts" >> Select(ExtractStatistics.COUNTS) | "Shard" >> beam.Map(lambda kv: kv[0])
    return rows, tallies, checked, numeric, shards


def test_extract_statistics_of_a_read_task_emits_each_kind_of_output(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("word,fare\na,1.5\nb,2.5\na,\n")
    with pipeline() as p:
        extracted = p | ReadInputs([str(path)], "csv") | beam.ParDo(ExtractStatistics(SPEC, 1, str(tmp_path)))
        rows, tallies, checked, numeric, shards = _select_all(extracted)
        assert_that(rows, equal_to([(("csv", str(path)), (3, path.stat().st_size))]), label="rows")
        assert_that(tallies, equal_to([("word", 3, 3, 0)]), label="tallies")
        assert_that(checked, equal_to([("bucket", 3)]), label="checked")
        assert_that(numeric, equal_to([("fare", 2, 1)]), label="numeric")
        assert_that(shards, equal_to([("word", 0)]), label="shards")


def test_extract_statistics_of_elements_summarizes_per_bundle(tmp_path):
    elements = [{"word": "a", "fare": 1.5}, {"word": "b", "fare": 2.5}, {"word": "a"}]
    with pipeline() as p:
        extracted = (p | beam.Create(elements) | ToBatches(source_columns(SPEC), max_batch_rows=2)
                     | beam.ParDo(ExtractStatistics(SPEC, 1, str(tmp_path))))
        rows, tallies, checked, numeric, shards = _select_all(extracted)
        total = (rows | "Values" >> beam.Map(lambda kv: (kv[0], kv[1][0])) | "Total" >> beam.CombinePerKey(sum))
        assert_that(total, equal_to([(("elements", None), 3)]), label="rows")
        assert_that(tallies, equal_to([("word", 3, 3, 0)]), label="tallies")
        assert_that(checked, equal_to([("bucket", 3)]), label="checked")
        numbers = (numeric | "Pairs" >> beam.MapTuple(lambda n, v, m: (n, (v, m)))
                   | "SumNumbers" >> beam.CombinePerKey(lambda vs: tuple(map(sum, zip(*vs)))))
        assert_that(numbers, equal_to([("fare", (2, 1))]), label="numeric")


def test_to_batches_makes_arrow_batches_of_dicts_rows_and_record_batches():
    elements = [{"word": "a", "fare": 1}, beam.Row(word="b", fare=2.5),
                pa.RecordBatch.from_pydict({"word": ["c"], "fare": [3.0], "extra": [1]})]
    with pipeline() as p:
        batches = p | beam.Create(elements, reshuffle=False) | ToBatches(source_columns(SPEC))
        values = batches | beam.FlatMap(lambda b: zip(b.table.column("word").to_pylist(),
                                                      b.table.column("fare").to_pylist()))
        assert_that(values, equal_to([(b"a", 1.0), (b"b", 2.5), ("c", 3.0)]))


def _part_refs(name, tokens, work_dir, num_shards):
    counts = TokenCounts.from_tokens(np.arange(len(tokens), dtype=np.int64), pa.array(tokens, pa.binary()),
                                     len(tokens), False)
    return [((name, shard), ref) for shard, ref in write_parts(name, counts, num_shards, work_dir)]


def test_rank_vocabularies_merges_parts_of_every_shard_into_one_ranked_file(tmp_path):
    work, state = str(tmp_path / "work"), str(tmp_path / "state")
    refs = (_part_refs("word", [b"b", b"a", b"b", b"c"], work, 3)
            + _part_refs("word", [b"c", b"b", b"d"], work, 3))
    with pipeline() as p:
        entries = ({"counts": p | "Counts" >> beam.Create(refs),
                    "tally": p | "Tally" >> beam.Create([("word", Tally(rows=7, values=7))])}
                   | RankVocabularies(SPEC, work, state))
        sizes = entries | beam.Map(lambda e: (e[0], e[1]["state"]["vocabulary_size"], e[1]["figures"]["rows"]))
        assert_that(sizes, equal_to([("word", 4, 7)]))
    vocabulary = fs.read_bytes(fs.join(state, state_files.relpath("word", state_files.VOCABULARY)))
    assert vocabulary == b"b\nc\nd\na\n"  # count desc (3, 2), then token desc among ties


def test_summarize_numeric_merges_parts_to_the_moments_of_all_rows(tmp_path):
    rng = np.random.default_rng(1)
    chunks = [rng.normal(5, 2, (n, 1)) for n in (10, 3, 40)]
    parts = []
    for index, chunk in enumerate(chunks):
        stats = NumericStats.for_moments(1)
        stats.add(chunk)
        stats.counters.rows = stats.counters.values = len(chunk)
        parts.append((("fare", index // 2), (index, stats.finish())))
    everything = np.concatenate(chunks)
    with pipeline() as p:
        entries = p | beam.Create(parts) | SummarizeNumeric(SPEC, str(tmp_path))
        assert_that(entries | beam.Map(lambda e: (e[0], e[1]["state"]["count"])), equal_to([("fare", 53)]))
    mean = float(fs.read_bytes(str(tmp_path / "fare" / state_files.MEAN)))
    truth = float(sum(map(Fraction, everything[:, 0])) / len(everything))
    assert abs(mean - truth) <= 2 * np.spacing(truth)  # float64 merges: within an ulp or two


def test_check_stateless_adds_up_the_figures_of_every_batch():
    with pipeline() as p:
        entries = (p | beam.Create([("bucket", Tally(rows=2, values=2)), ("bucket", Tally(rows=3, values=2, missing=1))])
                   | CheckStateless(SPEC))
        assert_that(entries | beam.Map(lambda e: (e[0], e[1]["figures"]["values"], e[1]["figures"]["missing"])),
                    equal_to([("bucket", 4, 1)]))


def test_count_rows_sums_per_file():
    with pipeline() as p:
        rows = p | beam.Create([("a.csv", (2, 10)), ("b.csv", (5, 7)), ("a.csv", (3, 20))]) | CountRows()
        assert_that(rows, equal_to([("a.csv", (5, 30)), ("b.csv", (5, 7))]))


def test_pick_golden_rows_keeps_the_smallest_distinct_keys_whatever_the_order():
    rows = [{"w": w} for w in "gabc"]
    candidates = [(7, json.dumps(rows[0])), (1, json.dumps(rows[1])), (3, json.dumps(rows[3])),
                  (1, json.dumps(rows[2])), (1, json.dumps(rows[1]))]
    with pipeline() as p:
        picked = p | beam.Create(candidates[::-1]) | PickGoldenRows(3)
        assert_that(picked, equal_to([[(1, json.dumps(rows[1])), (1, json.dumps(rows[2])), (3, json.dumps(rows[3]))]]))


def test_write_manifest_candidate_waits_for_every_part(tmp_path):
    spec = spec_lib.spec_from_dict({"features": {"bucket": SPEC.features["bucket"].to_dict()}})
    entry = ("bucket", {**spec.features["bucket"].to_dict(), "state": {}, "figures": {"rows": 3}}, {})
    with pipeline() as p:
        manifest = ({"features": p | "Features" >> beam.Create([entry]),
                     "rows": p | "Rows" >> beam.Create([(("csv", "a.csv"), (3, 10)), (("csv", "b.csv"), (0, 0))]),
                     "golden": p | "Golden" >> beam.Create([[(5, json.dumps({"word": "a"}))]])}
                    | WriteManifestCandidate(spec, str(tmp_path)))
        assert_that(manifest | beam.Map(lambda m: [i["rows"] for i in m["provenance"]["inputs"]]),
                    equal_to([[3, 0]]))
    written = json.loads((tmp_path / CANDIDATE).read_text())
    assert sorted(written["features"]) == ["bucket"] and written["provenance"]["rows_read"] == 3


def test_publish_artifact_records_golden_rows_and_publishes_the_candidate(tmp_path):
    import prepro
    from pipelines.analyze import AnalyzeFeatures, PublishArtifact
    rows = [{"word": w, "fare": float(i)} for i, w in enumerate("abacaba")]
    work_dir, out = str(tmp_path / "work"), str(tmp_path / "out")
    with pipeline() as p:
        staged = (p | beam.Create(rows)
                  | AnalyzeFeatures(SPEC, out, golden_rows=2, publish=False, work_dir=work_dir))
        assert_that(staged.manifest | beam.Map(lambda m: "state_dir" in m), equal_to([False]))
    candidate = json.loads((tmp_path / "work" / CANDIDATE).read_text())
    assert not (tmp_path / "out").exists()  # a candidate is not an artifact
    with pipeline() as p:
        published = p | beam.Create([candidate]) | beam.ParDo(PublishArtifact(SPEC, out, work_dir, 2))
        assert_that(published | beam.Map(lambda m: (m["format_version"], m["golden"]["rows"],
                                                    m["features"]["word"]["state"]["vocabulary_size"])),
                    equal_to([(artifacts.FORMAT_VERSION, 2, 3)]))
    arts = prepro.load(out)
    assert arts.vocabulary("word") == ["a", "b", "c"] and prepro.golden.verify(arts).ok


def test_read_base_state_gives_the_kept_state_as_the_jobs_own_streams(tmp_path):
    """A base made with --keep-state -> its token state re-cut into shards of part files
    (tokens and totals intact), its row figures, its moments as the first part."""
    from pipelines.analyze import run_analyze
    from pipelines.base import BASE_PART, Base, ReadBaseState
    from pipelines.vocabulary import read_part
    (tmp_path / "a.csv").write_text("word,fare\na,1\nb,2\na,4\n,8\n")
    base_dir = str(tmp_path / "base")
    run_analyze(SPEC, [str(tmp_path / "a.csv")], "csv", base_dir, keep_state=True, golden_rows=0)
    base = Base(base_dir, SPEC, golden_rows=0, golden_limit=0)
    work_dir = str(tmp_path / "work")
    with pipeline() as p:
        streams = p | ReadBaseState(base, SPEC, num_shards=3, work_dir=work_dir)
        tokens = (streams["counts"]
                  | beam.MapTuple(lambda key, ref: read_part(ref, key[1], pa.binary()))
                  | beam.FlatMap(lambda c: [(t, n, c.documents, c.occurrences) for t, n in zip(
                      c.table()["token"].to_pylist(), c.table()["count"].to_pylist())] or
                      [(None, 0, c.documents, c.occurrences)]))
        assert_that(tokens | "Tokens" >> beam.Filter(lambda t: t[0] is not None)
                    | beam.Map(lambda t: (t[0], t[1])), equal_to([(b"", 1), (b"a", 2), (b"b", 1)]), label="tokens")
        assert_that(tokens | "Totals" >> beam.Map(lambda t: (t[2], t[3])) | beam.CombineGlobally(
            lambda ts: tuple(map(sum, zip(*ts)))), equal_to([(4, 4)]), label="totals")
        assert_that(streams["tally"] | beam.MapTuple(lambda n, t: (n, t.rows, t.values, t.missing)),
                    equal_to([("word", 4, 4, 0)]), label="tally")
        assert_that(streams["checked"] | "CheckedRows" >> beam.MapTuple(lambda n, t: (n, t.values)),
                    equal_to([("bucket", 4)]), label="checked")
        assert_that(streams["numeric"] | beam.MapTuple(lambda group, part: (
            group, part[0], part[1].moments.count, [Fraction(s, 2 ** 1075) for s in part[1].moments.sums])),
            equal_to([(("fare", BASE_PART), BASE_PART, 4, [Fraction(15)])]), label="numeric")
