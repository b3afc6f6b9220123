"""Huge vocabularies, at a size CI can afford: counts spilled in many part files, 16
shards, 1 and 2 worker processes, checked against an independent exact count and
against StringLookup.adapt(). The full-size run (21.7M distinct tokens, a 575 MB
vocabulary file) is `bench/huge_vocab.py`, also run here when slow tests are on."""

import os

import numpy as np
import pytest

import prepro
from bench import huge_vocab
from conftest import state_path
from pipelines import analyze, transforms
from prepro.spec import spec_from_dict

SPEC = spec_from_dict({"features": {"user": {"source": "user", "layer": "StringLookup"}}})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    data = str(tmp_path_factory.mktemp("huge"))
    meta = huge_vocab.generate(data, rows=300_000, id_space=250_000, files=3)
    return data, meta


def test_spilled_sharded_counts_equal_an_exact_count_and_adapt(corpus, tmp_path, monkeypatch):
    data, meta = corpus
    # 256 KB batches and of pending counts: each 2.7 MB file is written as ~10 part files.
    monkeypatch.setattr(transforms, "PENDING_COUNT_BYTES", 256 << 10)
    counters = {}
    out = str(tmp_path / "in_process")
    analyze.run_analyze(SPEC, [os.path.join(data, "*.csv")], "csv", out, num_shards=16, golden_rows=0,
                        batch_bytes=256 << 10, counters=counters)
    assert counters["part_files_written"] >= 3 * 8
    expected = huge_vocab.exact_vocabulary(data)
    manifest = prepro.load(out).manifest
    assert expected["distinct"] == meta["distinct"] == manifest["features"]["user"]["figures"]["distinct_tokens"]
    assert manifest["files"]["user/vocabulary.txt"]["sha256"] == expected["sha256"]
    assert meta["distinct"] > 150_000

    # 2 worker processes (16 shards by default, budget as shipped): the same bytes.
    two = str(tmp_path / "two_workers")
    analyze.run_analyze(SPEC, [os.path.join(data, "*.csv")], "csv", two, golden_rows=0,
                        pipeline_args=["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    for a, b in ((os.path.join(out, "manifest.json"), os.path.join(two, "manifest.json")),
                 (state_path(out, "user/vocabulary.txt"), state_path(two, "user/vocabulary.txt"))):
        with open(a, "rb") as a_file, open(b, "rb") as b_file:
            assert a_file.read() == b_file.read(), a

    # The Keras reference: the same layer after a real adapt() on the same rows.
    import keras
    import pyarrow.csv as pacsv
    tokens = np.concatenate([pacsv.read_csv(os.path.join(data, f))["user"].to_numpy(zero_copy_only=False)
                             for f in sorted(os.listdir(data)) if f.endswith(".csv")]).astype(object)
    adapted = keras.layers.StringLookup()
    adapted.adapt(tokens)
    built = prepro.load(out).layer("user")
    assert built.get_vocabulary() == adapted.get_vocabulary()
    probe = np.concatenate([tokens[::997], ["user:0:never", ""]]).astype(object)
    np.testing.assert_array_equal(built(probe), adapted(probe))


@pytest.mark.slow
def test_full_size_benchmark_passes(tmp_path):
    """`python -m bench.huge_vocab`: 45M rows, 21.7M distinct tokens (about 4 minutes,
    plus 2 to generate the data); exits non-zero if a check fails."""
    assert huge_vocab.main(["--data-dir", str(tmp_path)]) == 0


def test_a_tight_budget_spills_the_largest_features_and_changes_no_byte(tmp_path, monkeypatch):
    from prepro.spec import load_spec
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = load_spec(os.path.join(root, "examples", "spec.yaml"))  # 3 token features, 4 others
    inputs = [os.path.join(root, "examples", "data", "*.csv")]
    plain, tight = str(tmp_path / "plain"), str(tmp_path / "tight")
    analyze.run_analyze(spec, inputs, "csv", plain, golden_rows=0)
    monkeypatch.setattr(transforms, "PENDING_COUNT_BYTES", 4 << 10)
    counters = {}
    analyze.run_analyze(spec, inputs, "csv", tight, golden_rows=0, batch_bytes=16 << 10, num_shards=4,
                        counters=counters)
    assert counters["part_files_written"] > 3 * 3 * 4
    for dirpath, _, names in os.walk(plain):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), plain)
            with open(os.path.join(plain, rel), "rb") as a, open(os.path.join(tight, rel), "rb") as b:
                assert a.read() == b.read(), rel
