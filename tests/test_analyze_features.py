"""`AnalyzeFeatures` in a user's own pipeline, over rows that are not files (shaped
like BigQuery's output: NULLs, REPEATED fields, NUMERIC, BYTES, TIMESTAMP): the same
artifacts as the CLI on the same rows written to Parquet and CSV, whatever the element
form, the batching or the runner. Real Beam pipelines, real files, real Keras."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import prepro
from analyze_features_job import LIST_SPEC, SPEC, bigquery_rows, run, write_csv, write_parquet
from conftest import snapshot
from pipelines import cli
from prepro import spec as spec_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# An empty CSV field is no integer (the CLI's policy for IntegerLookup), so the CSV
# reference leaves out the INT64 column with NULLs; Parquet carries them.
CSV_SPEC = {"features": {n: f for n, f in SPEC["features"].items() if n != "flight"}}
SKETCH = "distance_sketch"  # the approximate sketch: within its bound, not byte for byte (see AnalyzeFeatures)


def _cli(tmp_path, name, spec, data, fmt):
    (tmp_path / f"{name}.json").write_text(json.dumps(spec))
    out = str(tmp_path / name)
    assert cli.main(["analyze", "--spec", str(tmp_path / f"{name}.json"), "--input", data, "--format", fmt,
                     "--output", out]) == 0
    return out


def _state(root):
    """Every published file but the manifest, by relative path, with the manifest's
    features and golden rows: what must be byte-identical (provenance may differ)."""
    files = {k: v for k, v in snapshot(root).items() if k != "manifest.json" and f"/{SKETCH}/" not in k}
    manifest = json.loads(open(os.path.join(root, "manifest.json")).read())
    features = {n: e for n, e in manifest["features"].items() if n != SKETCH}
    return files, features, manifest.get("golden"), manifest["state_dir"] if SKETCH not in manifest["features"] else None


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("reference")
    rows = bigquery_rows()
    return {"parquet": _cli(d, "parquet", SPEC, write_parquet(rows, str(d / "rows.parquet")), "parquet"),
            "csv": _cli(d, "csv", CSV_SPEC, write_csv(rows, str(d / "rows.csv")), "csv"),
            "dicts_for_csv": run(str(d / "dicts_for_csv"), "dicts", spec=CSV_SPEC) and str(d / "dicts_for_csv")}


@pytest.fixture(scope="module")
def dicts(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("dicts") / "arts")
    manifest = run(out, "dicts")
    return out, manifest


def test_dicts_give_the_clis_artifacts_on_the_same_rows_as_parquet_and_csv(reference, dicts):
    out, manifest = dicts
    assert manifest["provenance"]["input_format"] == "elements" and manifest["provenance"]["rows_read"] == 700
    assert manifest["provenance"]["inputs"] == []
    assert manifest["golden"]["rows"] == 16
    for fmt, mine in (("parquet", _state(out)), ("csv", _state(reference["dicts_for_csv"]))):
        theirs = _state(reference[fmt])
        assert sorted(mine[0]) == sorted(theirs[0]), fmt
        for relpath in theirs[0]:
            assert mine[0][relpath] == theirs[0][relpath], f"{fmt}: {relpath} differs"
        assert mine[1] == theirs[1], fmt   # every feature's config, state and figures
        assert mine[2] == theirs[2], fmt   # the golden rows, chosen by content
    # The figures count what BigQuery's NULLs are: missing values.
    figures = manifest["features"]
    assert figures["flight"]["figures"]["missing"] == sum(1 for r in bigquery_rows() if r["flight"] is None) > 0
    assert figures["fare"]["figures"]["missing"] == sum(1 for r in bigquery_rows() if r["fare"] is None) > 0


def test_the_approximate_sketch_is_within_its_bound_of_the_clis(reference, dicts):
    from prepro.stats.numeric import rank_error
    values = np.array([r["distance"] for r in bigquery_rows() if r["distance"] is not None])
    for root in (dicts[0], reference["parquet"]):
        arts = prepro.load(root)
        entry = arts.manifest["features"][SKETCH]
        boundaries = arts.layer(SKETCH).bin_boundaries
        assert rank_error(values, boundaries, 8) <= entry["state"]["rank_error_bound"]


def test_the_artifact_builds_layers_that_match_adapt_on_the_same_rows(dicts):
    """Parity with a real adapt() on the rows as NumPy arrays, computed here."""
    import keras
    arts = prepro.load(dicts[0])
    rows = bigquery_rows()
    carriers = np.array([r["carrier"] for r in rows])
    lookup = keras.layers.StringLookup()
    lookup.adapt(carriers)
    assert arts.layer("carrier").get_vocabulary() == lookup.get_vocabulary()
    fares = np.array([[float(r["fare"])] for r in rows if r["fare"] is not None])
    norm = keras.layers.Normalization()
    norm.adapt(fares)
    np.testing.assert_allclose(np.asarray(arts.layer("fare")(fares[:50])), np.asarray(norm(fares[:50])), rtol=1e-5,
                               atol=1e-5)
    reviews = np.array([r["review"] for r in rows])
    text = keras.layers.TextVectorization(max_tokens=60, ngrams=2, output_mode="tf_idf")
    text.adapt(reviews)
    assert arts.layer("review").get_vocabulary() == text.get_vocabulary()
    np.testing.assert_allclose(np.asarray(arts.layer("review")(reviews[:20])), np.asarray(text(reviews[:20])),
                               rtol=1e-6)


@pytest.mark.parametrize("form", ["rows", "namedtuples", "dataclasses", "record_batches"])
def test_every_element_form_gives_the_same_bytes(tmp_path, dicts, form):
    out = str(tmp_path / form)
    run(out, form)
    assert snapshot(out) == snapshot(dicts[0])


def test_batching_never_changes_the_bytes(tmp_path, dicts):
    out = str(tmp_path / "small_batches")
    run(out, "dicts", max_batch_rows=7)
    assert snapshot(out) == snapshot(dicts[0])


def test_repeated_fields_are_list_values_as_in_parquet(tmp_path):
    rows = bigquery_rows()
    theirs = _cli(tmp_path, "parquet", LIST_SPEC, write_parquet(rows, str(tmp_path / "rows.parquet")), "parquet")
    out = str(tmp_path / "dicts")
    run(out, "dicts", spec=LIST_SPEC)
    assert _state(out)[:3] == _state(theirs)[:3]
    vocabulary = prepro.load(out).layer("tags").get_vocabulary()
    assert sorted(vocabulary[1:]) == sorted({t for r in rows for t in r["tags"]})


def test_spec_as_path_dict_or_spec_is_the_same(tmp_path, dicts):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    for name, spec in (("path", str(path)), ("spec", spec_lib.spec_from_dict(SPEC))):
        run(str(tmp_path / name), "dicts", spec=spec)
        assert snapshot(tmp_path / name) == snapshot(dicts[0]), name


def test_two_worker_processes_give_the_same_bytes(tmp_path, dicts):
    run(str(tmp_path / "two_workers"), "dicts", ["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert snapshot(tmp_path / "two_workers") == snapshot(dicts[0])


def test_dask_gives_the_same_bytes(tmp_path, dicts, dask_cluster):
    """The user's pipeline in its own process (Beam's DaskRunner leaves its Client open,
    which would outlive this module's cluster in the test process)."""
    out = str(tmp_path / "dask")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "analyze_features_job.py"), out, "dicts",
                           "--runner", "DaskRunner", "--dask_client_address", dask_cluster.scheduler_address],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert snapshot(out) == snapshot(dicts[0])


def test_portable_runner_with_separate_sdk_workers_gives_the_same_bytes(tmp_path, dicts, worker_pool):
    """The user's pipeline in its own process through an embedded job service, its DoFns
    in SDK workers of an external pool that find prepro only as installed (as the
    deploy recipes' workers do)."""
    endpoint, pool_log = worker_pool
    out = str(tmp_path / "portable")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "analyze_features_job.py"), out, "dicts",
                           "--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "EXTERNAL",
                           "--environment_config", endpoint], capture_output=True, text=True, timeout=300,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting worker" in pool_log.read_text(), "no SDK worker process was started by the pool"
    assert json.loads(done.stdout.strip().splitlines()[-1]) == sorted(SPEC["features"])
    assert snapshot(out) == snapshot(dicts[0])


# Off the happy path: each a clear error naming what is wrong, and nothing published.

def _pipeline_error(elements, output, spec=SPEC):
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from pipelines import AnalyzeFeatures
    with pytest.raises(Exception) as caught:
        with beam.Pipeline(runner=FnApiRunner()) as p:
            _ = p | beam.Create(elements, reshuffle=False) | AnalyzeFeatures(spec, output)
    assert not os.path.exists(os.path.join(output, "manifest.json"))
    return str(caught.value)


def test_an_element_of_another_kind_is_named(tmp_path):
    message = _pipeline_error([{"carrier": "AA"}, "AA,12"], str(tmp_path / "out"), LIST_SPEC)
    assert "AnalyzeFeatures takes elements that are dicts" in message and "builtins.str ('AA,12')" in message


def test_a_value_of_the_wrong_type_names_its_column_and_shows_it(tmp_path):
    import datetime
    rows = bigquery_rows(20)
    rows[5]["carrier"] = datetime.date(2026, 1, 2)
    message = _pipeline_error(rows, str(tmp_path / "out"))
    assert "column 'carrier': expected string values, found datetime.date(2026, 1, 2)" in message
    assert "a batch of the PCollection's elements" in message and "feature 'carrier'" in message


def test_a_record_batch_without_a_column_names_it(tmp_path):
    import pyarrow as pa
    batch = pa.RecordBatch.from_pydict({"carrier": ["AA"]})
    message = _pipeline_error([batch], str(tmp_path / "out"), LIST_SPEC)
    assert "missing column(s) ['tags'] (RecordBatch schema has ['carrier'])" in message


def test_an_empty_pcollection_publishes_nothing(tmp_path):
    assert "the PCollection holds no rows" in _pipeline_error([], str(tmp_path / "out"))


def test_a_failed_pipeline_leaves_the_previous_artifact_as_it_was(tmp_path):
    out = str(tmp_path / "out")
    run(out, "dicts", spec=LIST_SPEC)
    before = snapshot(out)
    rows = bigquery_rows(30)
    rows[3]["tags"] = [1.5]
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from pipelines import AnalyzeFeatures
    with pytest.raises(Exception, match="column 'tags': expected string values, found 1.5"):
        with beam.Pipeline(runner=FnApiRunner()) as p:
            _ = p | beam.Create(rows) | AnalyzeFeatures(LIST_SPEC, out)
    published = {k: v for k, v in snapshot(out).items() if not k.startswith(".prepro-job-")}
    assert published == before  # the failed run's files stay in its own .prepro-job-<id>/, never published


def test_publishing_into_an_output_another_job_holds_fails_naming_the_holder(tmp_path):
    from pipelines.publish import OutputDirectory
    out = str(tmp_path / "out")
    with OutputDirectory(out):  # a CLI job running into the same output
        with pytest.raises(Exception, match="is being written by another prepro job"):
            run(out, "dicts", spec=LIST_SPEC)
    assert not os.path.exists(os.path.join(out, "manifest.json"))


def test_bad_arguments_are_refused_when_the_transform_is_made(tmp_path):
    import apache_beam as beam
    from pipelines import AnalyzeFeatures
    with pytest.raises(ValueError, match="golden_rows must be an integer >= 0"):
        AnalyzeFeatures(SPEC, str(tmp_path), golden_rows=-1)
    with pytest.raises(ValueError, match="num_shards must be an integer >= 1"):
        AnalyzeFeatures(SPEC, str(tmp_path), num_shards=0)
    with pytest.raises(TypeError, match="spec must be a path, a dict or a prepro.Spec"):
        AnalyzeFeatures(42, str(tmp_path))
    with pytest.raises(spec_lib.SpecError, match="feeds features of different kinds"):
        AnalyzeFeatures({"features": {"a": {"source": "x", "layer": "StringLookup"},
                                      "b": {"source": "x", "layer": "Normalization"}}}, str(tmp_path))
    p = beam.Pipeline()
    unbounded = beam.pvalue.PCollection(p, is_bounded=False)
    with pytest.raises(ValueError, match="needs a bounded PCollection"):
        unbounded | AnalyzeFeatures(LIST_SPEC, str(tmp_path))
