"""prepro.golden_numpy computes golden outputs without TensorFlow: proven equal, dtype,
shape and bits, to what Keras layers built from the same real artifacts give
(`prepro.golden.feature_outputs`), over every option it covers and hostile rows; it
declines (NotCovered) what it does not cover, and a cached verdict plus full coverage
means a CLI run that never imports TensorFlow.

Real Beam jobs, real Keras 3 / TensorFlow layers.
"""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

import prepro
from prepro import golden, golden_numpy, tf_mean, verdict_cache
from prepro.spec import spec_from_dict
from conftest import run_job, write_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ["the", "cat", "Sat", "on", "mat!", "dog,", "café", "naïve", "日本", "emoji🙂", "a-b", "x.y", "A", "THE"]
CATS = ["red", "green", "blue", "Red", "ünï", "[UNK]", "mask", ""]


def _text_features():
    out = {}
    combos = []
    for mode in ("int", "multi_hot", "count", "tf_idf"):
        for standardize in (None, "lower", "strip_punctuation", "lower_and_strip_punctuation"):
            for split in (None, "whitespace", "character"):
                combos.append({"output_mode": mode, "standardize": standardize, "split": split})
    combos += [{"ngrams": 2}, {"ngrams": [1, 3]}, {"ngrams": 3, "output_mode": "count"},
               {"ngrams": 2, "output_mode": "tf_idf", "split": "character"},
               {"output_sequence_length": 3}, {"output_sequence_length": 0}, {"output_sequence_length": 40},
               {"max_tokens": 8}, {"max_tokens": 8, "output_sequence_length": 5},
               {"max_tokens": 30, "pad_to_max_tokens": True, "output_mode": "multi_hot"},
               {"max_tokens": 30, "pad_to_max_tokens": True, "output_mode": "count"},
               {"max_tokens": 30, "pad_to_max_tokens": True, "output_mode": "tf_idf"},
               {"max_tokens": 6, "output_mode": "count", "ngrams": 2}]
    for i, config in enumerate(combos):
        out[f"text{i}"] = {"source": "text", "layer": "TextVectorization", "config": config}
    return out


def _lookup_features():
    out = {}
    i = 0
    for layer, source, mask in (("StringLookup", "cat", "mask"), ("IntegerLookup", "num", 0)):
        for mode in ("int", "one_hot", "multi_hot", "count", "tf_idf"):
            for oov in (0, 1):
                for config in ({}, {"mask_token": mask}, {"max_tokens": 5}, {"max_tokens": 9, "pad_to_max_tokens": True}):
                    if mode == "tf_idf" and "mask_token" in config:
                        continue  # Keras refuses nothing here, but the IDF layout is the same: keep the list short
                    out[f"lookup{i}"] = {"source": source, "layer": layer,
                                         "config": {"output_mode": mode, "num_oov_indices": oov, **config}}
                    i += 1
    out["lookup_oov_null"] = {"source": "cat", "layer": "StringLookup", "config": {"oov_token": None}}
    # No OOV token to pass: Keras pads the OOV weight itself (np.average)
    out["lookup_oov_null_tf_idf"] = {"source": "cat", "layer": "StringLookup",
                                     "config": {"oov_token": None, "output_mode": "tf_idf"}}
    out["lookup_int_oov_token"] = {"source": "num", "layer": "IntegerLookup", "config": {"oov_token": 7}}
    return out


def _numeric_features():
    out = {
        "norm": {"source": "x", "layer": "Normalization"},
        "norm_stacked": {"source": ["x", "y"], "layer": "Normalization"},
        "norm_stacked_none": {"source": ["x", "y"], "layer": "Normalization", "config": {"axis": None}},
        "norm_shape": {"source": "v", "layer": "Normalization", "shape": [2, 3]},
        "norm_shape_axis": {"source": "v", "layer": "Normalization", "shape": [2, 3], "config": {"axis": [1, 2]}},
        "norm_shape_first": {"source": "v", "layer": "Normalization", "shape": [2, 3], "config": {"axis": 1}},
        "disc_config": {"source": "x", "layer": "Discretization", "config": {"bin_boundaries": [-1.5, 0.0, 0.1, 2.0]}},
        "disc_stacked": {"source": ["x", "y"], "layer": "Discretization", "config": {"num_bins": 5}},
        "disc_shape": {"source": "v", "layer": "Discretization", "shape": [2, 3], "config": {"num_bins": 3}},
        "disc_exact": {"source": "y", "layer": "Discretization", "config": {"num_bins": 7}, "quantiles": "exact"},
    }
    for mode in ("int", "one_hot", "multi_hot", "count"):
        out[f"disc_{mode}"] = {"source": "x", "layer": "Discretization", "config": {"num_bins": 4, "output_mode": mode}}
        out[f"disc_stacked_{mode}"] = {"source": ["x", "y"], "layer": "Discretization",
                                       "config": {"num_bins": 3, "output_mode": mode}}
    for mode in ("one_hot", "multi_hot", "count"):
        out[f"cat_{mode}"] = {"source": "small", "layer": "CategoryEncoding",
                              "config": {"num_tokens": 6, "output_mode": mode}}
    for mode in ("int", "one_hot", "multi_hot", "count"):
        out[f"hash_{mode}"] = {"source": "cat", "layer": "Hashing", "config": {"num_bins": 5, "salt": 7,
                                                                               "output_mode": mode}}
    out["hash_pair"] = {"source": "text", "layer": "Hashing", "config": {"num_bins": 1 << 20, "salt": [133, 2**63 - 1]}}
    out["hash_mask"] = {"source": "cat", "layer": "Hashing", "config": {"num_bins": 9, "salt": 3, "mask_value": "red"}}
    out["hash_one_bin"] = {"source": "cat", "layer": "Hashing", "config": {"num_bins": 1, "salt": 3, "mask_value": "red"}}
    return out


FEATURES = {**_text_features(), **_lookup_features(), **_numeric_features()}


def _rows(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randrange(0, 9))]
        out.append({"text": " ".join(words) if i % 7 else "  ".join(words) + " ", "cat": rng.choice(CATS[:-1]),
                    "num": rng.choice([1, 2, 3, 5, 8, 13, -1, 0, 2**40]), "x": rng.gauss(0, 1),
                    "y": rng.choice([0.5, 1.5, rng.uniform(-3, 3)]), "small": rng.randrange(6),
                    "v": [rng.gauss(i % 3, 2) for _ in range(6)]})
    return out


HOSTILE = [
    {"text": "", "cat": "", "num": 99999, "x": float("nan"), "y": float("inf"), "small": 0,
     "v": [float("nan"), float("-inf"), 0.0, -0.0, 1e30, -1e30]},
    {"text": "   ", "cat": "mask", "num": 0, "x": float("-inf"), "y": -0.0, "small": 5,
     "v": [1e-45, 3.4e38, -3.4e38, 1.0, 2.0, 3.0]},
    {"text": " ".join(WORDS * 6), "cat": "[UNK]", "num": -1, "x": 1e39, "y": 0.1, "small": 3,
     "v": [0.0] * 3 + [5e-324, 1.0, -1.0]},
    {"text": "unseen words ONLY here ¿qué? 🙃\t\ttabs\nnewline", "cat": "never-seen", "num": 7, "x": 0.0, "y": 2.0,
     "small": 1, "v": [2.0] * 6},
    {"text": "THE CAT, the cat. The Cat!", "cat": "Red", "num": 2**40, "x": 0.1, "y": -1.5, "small": 2,
     "v": [-1.0] * 3 + [1.0] * 3},
    {"text": "tail nul\x00", "cat": "red\x00", "num": 3, "x": -1.5, "y": 1e-40, "small": 4,
     "v": [3.0] * 3 + [-3.0] * 3},
]


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden_numpy")
    write_jsonl(d / "train.jsonl", _rows(400, 1))
    return run_job(d, FEATURES, [str(d / "train.jsonl")], "jsonl", golden_rows=0)


def _keras(arts, name, rows):
    prep = arts.preprocessing([name])
    try:
        return golden.feature_outputs(prep, rows)[name]
    except Exception as e:
        return e


def _same(got, want, where):
    assert got.dtype == want.dtype, (where, got.dtype, want.dtype)
    assert got.shape == want.shape, (where, got.shape, want.shape)
    assert got.tobytes() == want.tobytes(), (where, got.tolist(), want.tolist())  # bits: NaN and -0.0 included


def test_every_covered_option_gives_keras_outputs_exactly(arts):
    assert not golden_numpy.uncovered(arts.spec), golden_numpy.uncovered(arts.spec)
    batches = [HOSTILE, _rows(40, 2), _rows(3, 3) + HOSTILE[:2], [HOSTILE[0]], [HOSTILE[3]]]
    declined, compared, oov_rows = set(), {}, {}
    tf_idf = {n for n, f in arts.spec.features.items() if f.options.get("output_mode") == "tf_idf"
              and f.options.get("num_oov_indices", 1) > 0}
    for name in sorted(FEATURES):
        for b, rows in enumerate(batches):
            singles = [[row] for row in rows] if b == 0 else []
            for batch in [rows] + singles:
                want = _keras(arts, name, batch)
                try:
                    got = golden_numpy.feature_outputs(arts, batch, [name])[name]
                except golden_numpy.Rejected:
                    assert isinstance(want, Exception), (name, batch)
                    continue
                except golden_numpy.NotCovered as e:
                    declined.add((name, str(e)))
                    continue
                assert not isinstance(want, Exception), (name, batch, want)
                _same(got, want, (name, b))
                compared[name] = compared.get(name, 0) + 1
                if name in tf_idf:  # the first column is an OOV slot's
                    oov_rows[name] = oov_rows.get(name, 0) + int((got.reshape(len(batch), -1)[:, 0] != 0).sum())
    # Every feature was compared on every batch (the OOV weight of tf_idf features too,
    # TensorFlow's float32 mean reproduced by prepro.tf_mean on x86-64).
    assert tf_mean.reproducible(50) and not declined, declined
    assert set(compared) == set(FEATURES), sorted(set(FEATURES) - set(compared))
    assert sum(compared.values()) > 1000
    assert len(tf_idf) >= 5 and all(oov_rows.get(n, 0) >= 3 for n in tf_idf), oov_rows


def test_tf_idf_without_oov_rows_is_covered(arts):
    """Learned tokens only: the IDF weights themselves are compared, not declined."""
    rows = [{"text": text, "cat": cat, "num": num, "x": 0.0, "y": 0.0, "small": 0, "v": [0.0] * 6}
            for text, cat, num in (("the cat sat on the mat", "red", 1), ("the the cat", "blue", 2),
                                   ("A THE", "green", 3))]
    compared = 0
    for name in sorted(n for n in FEATURES if FEATURES[n].get("config", {}).get("output_mode") == "tf_idf"):
        for row in [[r] for r in rows] + [rows]:
            try:
                got = golden_numpy.feature_outputs(arts, row, [name])[name]
            except golden_numpy.Rejected:
                assert isinstance(_keras(arts, name, row), Exception)
                continue
            _same(got, _keras(arts, name, row), name)
            compared += got.astype(bool).any()
    assert compared >= 20


def test_record_writes_the_files_keras_writes(arts, tmp_path):
    """golden.record with the evaluator and with Keras: byte-identical golden files and manifests."""
    candidates = [r for r in _rows(30, 4) + HOSTILE if not np.isnan(r["x"])]
    manifests = {}
    for evaluator in (True, False):
        root = tmp_path / str(evaluator)
        import shutil
        shutil.copytree(arts.root, root)
        manifests[evaluator] = golden.record(str(root), arts.manifest, candidates, 16, evaluator=evaluator)
    assert manifests[True]["golden"]["rows"] > 0
    assert manifests[True] == manifests[False]


def test_uncovered_options_fall_back():
    cases = {
        "callable": {"source": "t", "layer": "TextVectorization", "config": {"standardize": "tests.helpers_callables:my_standardize"}},
        "one_hot_text": {"source": "t", "layer": "TextVectorization", "config": {"output_mode": "one_hot"}},
        "ragged": {"source": "t", "layer": "TextVectorization", "config": {"ragged": True}},
        "sparse": {"source": "c", "layer": "StringLookup", "config": {"output_mode": "multi_hot", "sparse": True}},
        "oov2": {"source": "c", "layer": "StringLookup", "config": {"num_oov_indices": 2}},
        "farmhash": {"source": "c", "layer": "Hashing", "config": {"num_bins": 3}},
        "invert_norm": {"source": "x", "layer": "Normalization", "config": {"invert": True}},
        "dtype": {"source": "x", "layer": "Discretization", "config": {"num_bins": 3, "dtype": "float64"}},
    }
    for name, entry in cases.items():
        assert name in golden_numpy.uncovered(spec_from_dict({"features": {name: entry}})), name


# -- the cache and the CLI ----------------------------------------------------------------

SPEC = {"features": {"review": {"source": "text", "layer": "TextVectorization", "config": {"max_tokens": 50}}}}


def test_verdict_cache_hit_miss_and_bad_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("PREPRO_CACHE_DIR", str(tmp_path))
    spec = spec_from_dict(SPEC)
    assert verdict_cache.lookup(spec) is None
    verdict_cache.store(spec, None)
    path = tmp_path / "keras-check" / (verdict_cache.key(spec) + ".json")
    assert verdict_cache.lookup(spec) == {"refused": None}
    good = path.read_bytes()
    for bad in (b"", b"{", b"\xff", b"[]", b'{"refused": null}', json.dumps({**json.loads(good), "key": "0" * 64}).encode(),
                json.dumps({**json.loads(good), "refused": ""}).encode(), json.dumps({**json.loads(good), "x": 1}).encode(),
                json.dumps({**json.loads(good), "refused": 1}).encode(), b" " * (verdict_cache.MAX_ENTRY_BYTES + 1)):
        path.write_bytes(bad)
        assert verdict_cache.lookup(spec) is None, bad
    path.write_bytes(good)
    monkeypatch.setenv("PREPRO_KERAS_CHECK_CACHE", "0")
    assert verdict_cache.lookup(spec) is None
    monkeypatch.delenv("PREPRO_KERAS_CHECK_CACHE")
    # The key changes with what the check depends on; callables are never cached.
    other = spec_from_dict({"features": {"review": {**SPEC["features"]["review"], "config": {"max_tokens": 51}}}})
    assert verdict_cache.key(other) != verdict_cache.key(spec)
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert verdict_cache.lookup(spec) is None
    monkeypatch.delenv("KERAS_BACKEND")
    calls = spec_from_dict({"features": {"review": {"source": "text", "layer": "TextVectorization",
                                                    "config": {"standardize": "tests.helpers_callables:my_standardize"}}}})
    assert not verdict_cache.cacheable(calls)
    # A refusal is kept with its message and raised again without Keras.
    refused = spec_from_dict({"features": {"r": {"source": "text", "layer": "TextVectorization",
                                                 "config": {"output_mode": "tf_idf", "sparse": True}}}})
    with pytest.raises(prepro.SpecError, match="Keras refuses") as first:
        verdict_cache.check(refused)
    assert verdict_cache.lookup(refused) == {"refused": str(first.value)}


_PROBE = """
import subprocess, sys
import pipelines.keras_helper as helper
real = subprocess.Popen
def popen(args, *a, **k):
    if "pipelines.keras_helper" in args:
        print("HELPER STARTED", file=sys.stderr)
    return real(args, *a, **k)
helper.subprocess.Popen = popen
from pipelines import cli
status = cli.main(sys.argv[1:])
print("TENSORFLOW", "tensorflow" in sys.modules, "KERAS", "keras" in sys.modules)
sys.exit(status)
"""


def _cli(tmp_path, out, extra_env=None, spec=os.path.join(ROOT, "examples/spec.yaml")):
    env = {**os.environ, "PYTHONPATH": ROOT, "PREPRO_CACHE_DIR": str(tmp_path / "cache"), **(extra_env or {})}
    return subprocess.run([sys.executable, "-c", _PROBE, "analyze", "--spec", spec,
                           "--input", os.path.join(ROOT, "examples/data/*.csv"), "--format", "csv",
                           "--output", str(out), "--quiet"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)


def test_cached_verdict_means_no_tensorflow_anywhere_and_verify_passes(tmp_path):
    assert not golden_numpy.uncovered(prepro.load_spec(os.path.join(ROOT, "examples/spec.yaml")))
    first = _cli(tmp_path, tmp_path / "a")
    assert first.returncode == 0, first.stderr
    assert "HELPER STARTED" in first.stderr  # a new spec: checked by Keras in the helper, as before
    second = _cli(tmp_path, tmp_path / "b")
    assert second.returncode == 0, second.stderr
    assert "HELPER STARTED" not in second.stderr
    assert "TENSORFLOW False KERAS False" in second.stdout, second.stdout
    # Same golden files either way, and verify (Keras layers built now) passes on them.
    a, b = prepro.load(str(tmp_path / "a")), prepro.load(str(tmp_path / "b"))
    assert a.manifest["golden"]["rows"] == 16
    for relpath in (golden.ROWS_FILE, golden.EXPECTED_FILE):
        assert a.files.read(relpath) == b.files.read(relpath)
    report = golden.verify(b)
    assert report.ok, report.lines()
    import keras
    model_path = str(tmp_path / "prep.keras")
    b.preprocessing().preprocessing_model().save(model_path)
    report = golden.verify(b, model=model_path)
    assert report.ok, report.lines()
    # Turned off: Keras checks again (the helper starts).
    third = _cli(tmp_path, tmp_path / "c", {"PREPRO_KERAS_CHECK_CACHE": "0"})
    assert third.returncode == 0 and "HELPER STARTED" in third.stderr, third.stderr
    assert keras  # (imported for the model save)


def test_tf_idf_golden_rows_with_oov_tokens_need_no_tensorflow(tmp_path):
    """A bigram tf_idf vocabulary too small for the reviews: golden rows hold OOV tokens,
    whose weight (TensorFlow's float32 mean) prepro.tf_mean gives; verify with Keras passes."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("features:\n  review: {source: text, layer: TextVectorization, "
                    "config: {max_tokens: 40, ngrams: 2, output_mode: tf_idf}}\n")
    first = _cli(tmp_path, tmp_path / "a", spec=str(spec))
    assert first.returncode == 0 and "HELPER STARTED" in first.stderr, first.stderr
    second = _cli(tmp_path, tmp_path / "b", spec=str(spec))
    assert second.returncode == 0, second.stderr
    assert "HELPER STARTED" not in second.stderr and "TENSORFLOW False KERAS False" in second.stdout, second.stdout
    b = prepro.load(str(tmp_path / "b"))
    expected = json.loads(b.files.read(golden.EXPECTED_FILE))["review"]
    assert b.manifest["golden"]["rows"] == 16 and sum(row[0] != 0 for row in expected["values"]) >= 8
    assert prepro.load(str(tmp_path / "a")).files.read(golden.EXPECTED_FILE) == b.files.read(golden.EXPECTED_FILE)
    report = golden.verify(b)
    assert report.ok, report.lines()
