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
from pipelines.analyze import _source_columns
from pipelines.extract import Tally
from pipelines.transforms import (CANDIDATE, CheckStateless, CountRows, ExtractCounts, PickGoldenRows,
                                  RankVocabularies, ReadAndExtract, Select, SummarizeNumeric,
                                  WriteManifestCandidate)
from pipelines.vocabulary import write_parts
from prepro import fs, spec as spec_lib, state_files
from prepro.stats import TokenCounts
from prepro.stats.numeric import NumericStats

SPEC = spec_lib.spec_from_dict({"features": {
    "word": {"source": "word", "layer": "StringLookup"},
    "fare": {"source": "fare", "layer": "Normalization"},
    "bucket": {"source": "word", "layer": "Hashing", "config": {"num_bins": 4}}}})


def pipeline():
    return test_pipeline.TestPipeline(runner=FnApiRunner())


def test_read_and_extract_emits_each_kind_of_output(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("word,fare\na,1.5\nb,2.5\na,\n")
    inputs = [{"path": str(path), "bytes": path.stat().st_size}]
    tasks = prepro_io.plan_reads(inputs, "csv", prepro_io.PART_BYTES)
    extract = ExtractCounts(SPEC, "csv", _source_columns(SPEC), prepro_io.BATCH_BYTES, 1, str(tmp_path), 1, 0)
    with pipeline() as p:
        extracted = p | ReadAndExtract(tasks, extract)
        rows = extracted | "Rows" >> Select(ExtractCounts.ROWS)
        tallies = (extracted | "Tally" >> Select(ExtractCounts.TALLY)
                   | beam.MapTuple(lambda name, t: (name, t.rows, t.values, t.missing)))
        checked = extracted | "Checked" >> Select(ExtractCounts.CHECKED) | beam.MapTuple(lambda n, t: (n, t.values))
        numeric = (extracted | "Numeric" >> Select(ExtractCounts.NUMERIC)
                   | beam.MapTuple(lambda group, part: (group, part[1].counters.values, part[1].counters.missing)))
        shards = extracted | "Counts" >> Select(ExtractCounts.COUNTS) | beam.Map(lambda kv: kv[0])
        assert_that(rows, equal_to([(str(path), 3)]), label="rows")
        assert_that(tallies, equal_to([("word", 3, 3, 0)]), label="tallies")
        assert_that(checked, equal_to([("bucket", 3)]), label="checked")
        assert_that(numeric, equal_to([(("fare", 0), 2, 1)]), label="numeric")
        assert_that(shards, equal_to([("word", 0)]), label="shards")


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
        rows = p | beam.Create([("a.csv", 2), ("b.csv", 5), ("a.csv", 3)]) | CountRows()
        assert_that(rows, equal_to([("a.csv", 5), ("b.csv", 5)]))


def test_pick_golden_rows_keeps_the_smallest_keys_whatever_the_order():
    candidates = [((7, 1), {"w": "g"}), ((1, 4), {"w": "a"}), ((3, 0), {"w": "c"}), ((1, 2), {"w": "b"})]
    with pipeline() as p:
        picked = p | beam.Create(candidates[::-1]) | PickGoldenRows(3)
        assert_that(picked, equal_to([[((1, 2), {"w": "b"}), ((1, 4), {"w": "a"}), ((3, 0), {"w": "c"})]]))


def test_write_manifest_candidate_waits_for_every_part(tmp_path):
    spec = spec_lib.spec_from_dict({"features": {"bucket": SPEC.features["bucket"].to_dict()}})
    entry = ("bucket", {**spec.features["bucket"].to_dict(), "state": {}, "figures": {"rows": 3}}, {})
    inputs = [{"path": "a.csv", "bytes": 10}, {"path": "b.csv", "bytes": 0}]
    with pipeline() as p:
        manifest = ({"features": p | "Features" >> beam.Create([entry]),
                     "rows": p | "Rows" >> beam.Create([("a.csv", 3)]),
                     "golden": p | "Golden" >> beam.Create([[((0, 0), {"word": "a"})]])}
                    | WriteManifestCandidate(spec, inputs, "csv", str(tmp_path)))
        assert_that(manifest | beam.Map(lambda m: [i["rows"] for i in m["provenance"]["inputs"]]),
                    equal_to([[3, 0]]))
    written = json.loads((tmp_path / CANDIDATE).read_text())
    assert sorted(written["features"]) == ["bucket"] and written["provenance"]["rows_read"] == 3
