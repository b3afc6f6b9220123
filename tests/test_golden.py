"""Golden rows: the artifacts carry raw rows with their expected outputs, and `prepro
verify` catches skew in layers, in a saved .keras model and in an exported SavedModel.

Real Beam job, real Keras 3 / TensorFlow, real saved models.
"""

import csv
import json
import re

import keras
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import prepro
import prepro.golden
from pipelines import cli
from conftest import state_path
from test_training import FEATURES, _columns, _head, run_job


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden")
    columns = _columns(1500, 21)
    columns["age"][0] = np.nan  # row 1 is incomplete: never a golden row
    with open(d / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(columns))
        w.writerows(zip(*[["" if isinstance(x, float) and np.isnan(x) else x for x in v] for v in columns.values()]))
    return run_job(d, FEATURES, [str(d / "train.csv")], "csv")


def test_artifacts_carry_golden_rows_and_their_outputs(arts):
    golden = arts.manifest["golden"]
    assert golden["rows"] == 16 and {golden["rows_file"], golden["expected_file"]} <= set(arts.manifest["files"])
    rows = json.loads(open(state_path(arts.root, golden['rows_file'])).read())
    assert len(rows) == 16 and all(set(r) == {"note", "thal", "cp", "age", "chol", "trestbps", "oldpeak", "sex",
                                                  "patient"} for r in rows)
    # Each golden row is an input row, as JSON carries it, and row 1 (age missing) is never one.
    columns = _columns(1500, 21)
    by_patient_note = {}
    for i in range(1, 1500):
        by_patient_note.setdefault((str(columns["patient"][i]), str(columns["note"][i]), float(columns["chol"][i])),
                                   []).append(i)
    for r in rows:
        matches = [i for i in by_patient_note[(r["patient"], r["note"], r["chol"])]
                   if r["thal"] == columns["thal"][i] and r["cp"] == int(columns["cp"][i])
                   and r["age"] == float(columns["age"][i]) and r["sex"] == int(columns["sex"][i])]
        assert matches, r
    assert len({json.dumps(r, sort_keys=True) for r in rows}) == 16
    expected = json.loads(open(state_path(arts.root, golden['expected_file'])).read())
    # The expected outputs are the artifact layers' outputs on those rows, computed independently here.
    prep = arts.preprocessing()
    direct = prep.layers["thal"](np.array([[r["thal"]] for r in rows]))
    assert expected["thal"]["values"] == np.asarray(direct).tolist()
    assert expected["age"]["dtype"] == "float32" and len(expected["age"]["values"]) == 16


def test_verify_layers_and_exported_models(arts, tmp_path, capsys):
    assert cli.main(["verify", arts.root]) == 0
    assert "verify: OK" in capsys.readouterr().out
    prep = arts.preprocessing()
    serving = prep.end_to_end(_head(prep))
    serving.save(str(tmp_path / "serving.keras"))
    assert cli.main(["verify", arts.root, "--model", str(tmp_path / "serving.keras")]) == 0
    capsys.readouterr()
    prep.preprocessing_model().export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    assert cli.main(["verify", arts.root, "--model", str(tmp_path / "saved")]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^  \S+ +OK$", out, re.MULTILINE)) == len(FEATURES) and "verify: OK" in out


def test_verify_catches_a_skewed_serving_model(arts, tmp_path, capsys):
    prep = arts.preprocessing()
    stale = list(reversed(arts.vocabulary("thal")))  # the vocabulary of another day
    prep.layers["thal"] = keras.layers.StringLookup(vocabulary=stale, name=prep.layers["thal"].name)
    prep.layers["age"] = keras.layers.Normalization(mean=50.0, variance=81.0, name=prep.layers["age"].name)
    serving = prep.end_to_end(_head(prep))
    serving.save(str(tmp_path / "skewed.keras"))
    assert cli.main(["verify", arts.root, "--model", str(tmp_path / "skewed.keras")]) == 1
    out = capsys.readouterr().out
    assert "thal                     DIFFERS: row" in out and "age                      DIFFERS: row" in out
    assert "cp                       OK" in out and "verify: FAILED" in out


def test_golden_rows_can_be_turned_off(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("c\nx\ny\n")
    arts = run_job(tmp_path, {"c": {"source": "c", "layer": "StringLookup"}}, [str(tmp_path / "a.csv")], "csv",
                   golden_rows=0)
    assert "golden" not in arts.manifest and not any(f.startswith("golden/") for f in arts.manifest["files"])
    assert cli.main(["verify", arts.root]) == 2  # nothing to check: not a mismatch (1)
    assert "carries no golden rows" in capsys.readouterr().err


def test_rows_a_layer_rejects_are_not_golden(tmp_path):
    """num_oov_indices=0 rejects out-of-vocabulary values: such rows are passed over."""
    (tmp_path / "a.csv").write_text("c\n" + "".join(f"{v}\n" for v in "zaabab" + "a" * 30))
    arts = run_job(tmp_path, {"c": {"source": "c", "layer": "StringLookup",
                                    "config": {"num_oov_indices": 0, "max_tokens": 2}}},
                   [str(tmp_path / "a.csv")], "csv", golden_rows=4)
    rows = json.loads(open(state_path(arts.root, "golden/rows.json")).read())
    assert sorted(map(json.dumps, rows)) == [json.dumps({"c": "a"}), json.dumps({"c": "b"})]  # "z" is OOV
    assert prepro.golden.verify(arts).ok


def test_cli_records_golden_rows_in_a_helper_process(tmp_path):
    """A fresh `prepro analyze` (TensorFlow not loaded) records the golden outputs in a
    helper process started with the job; they equal what this process computes."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = str(tmp_path / "arts")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "analyze", "--spec", f"{root}/examples/spec.yaml",
                           "--input", f"{root}/examples/data/*.csv", "--format", "csv", "--output", out],
                          capture_output=True, text=True, env=env, cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    arts = prepro.load(out)
    assert arts.manifest["golden"]["rows"] == 16
    report = prepro.golden.verify(arts)
    assert report.ok and len(report.differences) == 7


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=20), max_size=40), st.data())
def test_fuzz_a_golden_key_reads_length_first_and_last_eight_bytes(values, data):
    """The words a string's part of the key is made of, against their definition per
    value (little-endian; a short value's bytes first in the head word, last in the
    tail word), on slices of an array as batches are."""
    import pyarrow as pa
    from pipelines.golden import _byte_words
    start = data.draw(st.integers(0, len(values)))
    stop = data.draw(st.integers(start, len(values)))
    array = pa.array(values, pa.large_binary()).slice(start, stop - start)
    lengths, heads, tails = _byte_words(array)
    part = values[start:stop]
    assert lengths.tolist() == [len(v) for v in part]
    assert heads.tolist() == [int.from_bytes(v[:8], "little") for v in part]
    assert tails.tolist() == [int.from_bytes(v[-8:], "little") << (8 * (8 - len(v[-8:]))) for v in part]


def test_golden_candidates_do_not_depend_on_batching_or_value_types():
    """The rows picked from a whole table equal those picked from any cut of it into
    batches, even where many rows tie on the hash (same length, first and last 8 bytes),
    and text numbers (CSV) key like typed ones (Parquet)."""
    import pyarrow as pa
    from pipelines.golden import candidate_rows
    from pipelines.io import Batch
    from prepro.spec import spec_from_dict
    spec = spec_from_dict({"features": {"w": {"source": "w", "layer": "StringLookup"},
                                        "x": {"source": "x", "layer": "Normalization"}}})
    columns = {"w": "string", "x": "float"}
    rng = np.random.default_rng(5)
    words = [f"prefix00{chr(97 + i % 26)}{i % 7}suffix00" for i in rng.integers(0, 400, 3000)]  # collide on the key
    xs = rng.normal(size=3000).round(2)
    typed = pa.table({"w": pa.array(words, pa.string()), "x": pa.array(xs)})
    as_text = pa.table({"w": pa.array([w.encode() for w in words], pa.binary()),
                        "x": pa.array([repr(float(x)).encode() for x in xs], pa.binary())})

    def pick(table, cuts):
        found = set()
        for a, b in zip([0] + cuts, cuts + [table.num_rows]):
            found.update(candidate_rows(Batch("f", a + 1, table.slice(a, b - a)), columns, spec, 8))
        return sorted(found)[:8]

    whole = pick(typed, [])
    assert len(whole) == 8
    for cuts in ([1], [100, 101, 2000], list(range(7, 3000, 97))):
        assert pick(typed, cuts) == whole and pick(as_text, cuts) == whole, cuts
