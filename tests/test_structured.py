"""A whole structured-data model from one artifact: every supported layer kind, built
from artifacts, against the same stock layers adapted (or, for the layers with nothing
to learn, constructed) on the same data in the test.

Real CSV, JSON Lines and TFRecord files, real Beam runs, real Keras 3.
"""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_job, write_jsonl
from test_training import _columns
from pipelines.errors import InputError

N = 3000
FEATURES = {
    "note": {"source": "note", "layer": "TextVectorization", "config": {"output_mode": "multi_hot"}},
    "thal": {"source": "thal", "layer": "StringLookup", "config": {"output_mode": "one_hot"}},
    "cp": {"source": "cp", "layer": "IntegerLookup", "config": {"output_mode": "one_hot"}},
    "age": {"source": "age", "layer": "Normalization"},
    "vitals": {"source": ["chol", "trestbps"], "layer": "Normalization"},
    "oldpeak": {"source": "oldpeak", "layer": "Discretization",
                "config": {"bin_boundaries": [0.0, 0.5, 1.5, 3.0], "output_mode": "one_hot"}},
    "sex": {"source": "sex", "layer": "CategoryEncoding", "config": {"num_tokens": 2, "output_mode": "one_hot"}},
    "patient": {"source": "patient", "layer": "Hashing",
                "config": {"num_bins": 32, "salt": 1337, "output_mode": "one_hot"}},
    "patient_plain": {"source": "patient", "layer": "Hashing", "config": {"num_bins": 16, "mask_value": "P0"}},
}


@pytest.fixture(scope="module")
def data():
    columns = _columns(N, 3)  # the structured columns tests/test_training.py uses
    return {c: v.astype(object) if v.dtype.kind == "U" else v for c, v in columns.items()}


def _write_csv(path, data, rows=slice(None)):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(data))
        w.writerows(zip(*(v[rows] for v in data.values())))
    return str(path)


def _reference_layers(data):
    """The layers as a Keras user builds them with adapt() on the NumPy arrays."""
    refs = {}
    for name, f in FEATURES.items():
        layer = getattr(keras.layers, f["layer"])(**f.get("config", {}))
        if f["layer"] in ("TextVectorization", "StringLookup", "IntegerLookup", "Normalization"):
            columns = [data[c] for c in (f["source"] if isinstance(f["source"], list) else [f["source"]])]
            layer.adapt(np.stack(columns, axis=-1).astype(np.float64) if f["layer"] == "Normalization"
                        else columns[0])
        refs[name] = layer
    return refs


def _model(layers, specs):
    """One input per column, every feature's layer, outputs concatenated as floats."""
    columns = sorted({c for f in specs.values() for c in (f["source"] if isinstance(f["source"], list)
                                                            else [f["source"]])})
    string_columns = {"note", "thal", "patient"}
    inputs = {c: keras.Input(shape=(1,), name=c, dtype="string" if c in string_columns else
                             "int64" if c in ("cp", "sex") else "float32") for c in columns}
    encoded = []
    for name in sorted(specs):
        f = specs[name]
        if isinstance(f["source"], list):
            x = keras.layers.Concatenate()([inputs[c] for c in f["source"]])
        elif f["layer"] == "TextVectorization":
            x = keras.ops.squeeze(inputs[f["source"]], -1)
        else:
            x = inputs[f["source"]]
        encoded.append(keras.ops.cast(keras.ops.reshape(layers[name](x), (-1, _width(layers[name], x))), "float32"))
    return keras.Model(inputs, keras.layers.Concatenate()(encoded))


def _width(layer, x):
    out = layer.compute_output_spec(x)
    return int(np.prod(out.shape[1:]))


def test_whole_model_from_one_artifact_equals_adapted_model(tmp_path, data):
    half = N // 2
    files = [_write_csv(tmp_path / "a.csv", data, slice(0, half)), _write_csv(tmp_path / "b.csv", data, slice(half, N))]
    arts = run_job(tmp_path, FEATURES, files, "csv")
    assert arts.features == sorted(FEATURES)
    built = {name: arts.layer(name) for name in FEATURES}
    for name, layer in built.items():
        assert type(layer) is getattr(keras.layers, FEATURES[name]["layer"]) and layer.name == f"{name}_" + {"TextVectorization": "text_vectorization", "StringLookup": "string_lookup", "IntegerLookup": "integer_lookup", "Normalization": "normalization", "Discretization": "discretization", "CategoryEncoding": "category_encoding", "Hashing": "hashing"}[FEATURES[name]["layer"]]
    reference = _reference_layers(data)
    probe = {k: v.copy() for k, v in data.items()}
    probe["thal"][:5] = "unseen"                  # OOV for the lookups
    probe["cp"][:5] = 99
    probe["note"][:5] = "pain unheard of"
    feeds = {c: tf.constant(v[:, None].astype(str) if v.dtype == object else
                            v[:, None].astype(np.int64) if c in ("cp", "sex") else v[:, None].astype(np.float32))
             for c, v in probe.items()}
    got = np.asarray(_model(built, FEATURES)(feeds))
    want = np.asarray(_model(reference, FEATURES)(feeds))
    assert got.shape == want.shape and got.shape[0] == N
    np.testing.assert_array_equal(got, want)
    assert arts.figures("sex") == {"rows": N, "values": N, "missing": 0, "invalid_utf8_replaced": 0,
                                   "invalid_utf8_skipped": 0}
    assert arts.manifest["features"]["patient"]["state"] == {}


def test_category_encoding_value_out_of_range_names_file_and_row(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("sex\n0\n1\n\n2\n1\n")  # blank lines are not rows: "2" is row 3
    with pytest.raises(InputError) as err:
        run_job(tmp_path, {"sex": {"source": "sex", "layer": "CategoryEncoding", "config": {"num_tokens": 2}}},
                [str(path)], "csv")
    message = str(err.value)
    assert "feature 'sex'" in message and "r.csv" in message and "row 3:" in message
    assert "outside [0, num_tokens=2)" in message


def test_category_encoding_counts_missing_and_takes_lists(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"codes": [0, 3]}, {"codes": None}, {"codes": [2]}, {}])
    arts = run_job(tmp_path, {"codes": {"source": "codes", "layer": "CategoryEncoding",
                                        "config": {"num_tokens": 4, "output_mode": "count"}}}, [path], "jsonl")
    assert arts.figures("codes")["values"] == 3 and arts.figures("codes")["missing"] == 2
    layer = arts.layer("codes")
    np.testing.assert_array_equal(layer(np.array([[0, 3], [2, 2]])),
                                  keras.layers.CategoryEncoding(num_tokens=4, output_mode="count")(np.array([[0, 3], [2, 2]])))


def test_all_missing_stateless_column_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"user": None}, {"other": 1}])
    with pytest.raises(InputError, match=r"feature 'user'.*no values: 2 rows, 2 missing"):
        run_job(tmp_path, {"user": {"source": "user", "layer": "Hashing", "config": {"num_bins": 8}}}, [path], "jsonl")


@pytest.mark.parametrize("fmt", ["jsonl", "tfrecord"])
def test_hashing_of_integer_ids_and_tfrecord_floats(tmp_path, fmt):
    """Hashing takes integer columns as Keras does (JSON numbers, int64_list); TFRecord
    float_list feeds numeric features."""
    rng = np.random.default_rng(0)
    ids, x = rng.integers(0, 10**12, 400), rng.normal(5, 2, 400).astype(np.float32)
    path = tmp_path / f"r.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, [{"user": int(i), "x": float(v)} for i, v in zip(ids, x)])
    else:
        with tf.io.TFRecordWriter(str(path)) as w:
            for i, v in zip(ids, x):
                w.write(tf.train.Example(features=tf.train.Features(feature={
                    "user": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(i)])),
                    "x": tf.train.Feature(float_list=tf.train.FloatList(value=[float(v)])),
                })).SerializeToString())
    arts = run_job(tmp_path, {"user": {"source": "user", "layer": "Hashing", "config": {"num_bins": 64}},
                              "x": {"source": "x", "layer": "Normalization"}}, [str(path)], fmt)
    assert arts.figures("user")["values"] == 400
    np.testing.assert_array_equal(arts.layer("user")(ids[:, None]), keras.layers.Hashing(num_bins=64)(ids[:, None]))
    reference = keras.layers.Normalization()
    reference.adapt(x.astype(np.float64)[:, None])
    probe = np.linspace(-5, 15, 21, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(arts.layer("x")(probe), reference(probe))


def test_hashing_jsonl_column_mixing_strings_and_numbers_names_row(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"user": "a"}, {"user": "b"}, {"user": 3}])
    with pytest.raises(InputError, match=r"r\.jsonl.*row 3|row 3.*r\.jsonl"):
        run_job(tmp_path, {"user": {"source": "user", "layer": "Hashing", "config": {"num_bins": 8}}}, [path], "jsonl")
