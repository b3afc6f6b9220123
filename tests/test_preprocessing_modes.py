"""`preprocessing()` for every layer and output mode: the feature inputs a model gets
(`model_inputs`) are exactly what `host_fn` yields in tf.data (shape, dtype, sparse,
ragged); the host outputs equal the same Keras layers after a real adapt() on the same
data; a model on those inputs fits and predicts; the end-to-end model takes raw columns;
golden outputs (what `prepro verify` compares) convert sparse and ragged outputs.

One real Beam job over one JSONL file; real Keras 3 / TensorFlow.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import prepro.golden
from conftest import run_job

N = 240
WORDS = ["red", "green", "blue", "cyan", "pink", "gray", "black"]
LIST_LEN = 3


def _rows(n, seed):
    rng = np.random.default_rng(seed)
    words = lambda k: [str(w) for w in rng.choice(WORDS, k)]  # noqa: E731
    return [{"text": " ".join(words(int(rng.integers(1, 5)))), "tag": words(1)[0], "tags": words(LIST_LEN),
             "code": int(rng.integers(0, 6)), "codes": [int(c) for c in rng.integers(0, 6, LIST_LEN)],
             "cat": int(rng.integers(0, 4)), "cats": [int(c) for c in rng.integers(0, 4, LIST_LEN)],
             "x": float(rng.normal(3, 2))} for _ in range(n)]


def _lookups(prefix, layer, source, modes):
    return {f"{prefix}_{mode}": {"source": source, "layer": layer, "config": {"output_mode": mode, **extra}}
            for mode, extra in modes.items()}


LOOKUP_MODES = {"int": {}, "one_hot": {}, "multi_hot": {}, "count": {}, "tf_idf": {}}
FEATURES = {
    "tv_int": {"source": "text", "layer": "TextVectorization", "config": {"output_sequence_length": 5}},
    "tv_int_ragged": {"source": "text", "layer": "TextVectorization", "config": {"ragged": True}},
    "tv_int_unpadded": {"source": "text", "layer": "TextVectorization"},
    "tv_multi_hot": {"source": "text", "layer": "TextVectorization", "config": {"output_mode": "multi_hot"}},
    "tv_count_padded": {"source": "text", "layer": "TextVectorization",
                        "config": {"output_mode": "count", "max_tokens": 12, "pad_to_max_tokens": True}},
    "tv_tf_idf": {"source": "text", "layer": "TextVectorization", "config": {"output_mode": "tf_idf"}},
    "tv_one_hot": {"source": "tag", "layer": "TextVectorization", "config": {"output_mode": "one_hot", "split": None}},
    "tv_multi_hot_sparse": {"source": "text", "layer": "TextVectorization",
                            "config": {"output_mode": "multi_hot", "sparse": True}},
    **_lookups("sl", "StringLookup", "tag", LOOKUP_MODES),
    **_lookups("sl_list", "StringLookup", "tags", LOOKUP_MODES),
    **_lookups("sl_sparse", "StringLookup", "tags", {"count": {"sparse": True}}),
    **_lookups("il", "IntegerLookup", "code", LOOKUP_MODES),
    **_lookups("il_list", "IntegerLookup", "codes", LOOKUP_MODES),
    **_lookups("il_sparse", "IntegerLookup", "code", {"multi_hot": {"sparse": True}}),
    **_lookups("hash", "Hashing", "tag", {m: {"num_bins": 5} for m in ("int", "one_hot", "multi_hot", "count")}),
    **_lookups("hash_list", "Hashing", "tags", {m: {"num_bins": 5} for m in ("int", "multi_hot")}),
    **_lookups("hash_sparse", "Hashing", "tags", {"count": {"num_bins": 5, "sparse": True}}),
    **_lookups("ce", "CategoryEncoding", "cat", {"one_hot": {"num_tokens": 4}}),
    **_lookups("ce_list", "CategoryEncoding", "cats", {m: {"num_tokens": 4} for m in ("multi_hot", "count")}),
    "x_norm": {"source": "x", "layer": "Normalization"},
    "x_bins": {"source": "x", "layer": "Discretization", "config": {"num_bins": 4, "output_mode": "one_hot"}},
}
# TextVectorization one_hot of split text yields a ragged (batch, tokens, N); Keras's
# symbolic (None, 1, None, N) cannot be reshaped to it, yet Keras takes it as that input.
UNRECONCILED = {"tv_one_hot_split": {"source": "text", "layer": "TextVectorization",
                                     "config": {"output_mode": "one_hot"}}}
RAW_SHAPES = {"tags": (LIST_LEN,), "codes": (LIST_LEN,), "cats": (LIST_LEN,)}
ADAPTED = ("TextVectorization", "StringLookup", "IntegerLookup")


def _raw(rows):
    """Raw rows as tf.data sees them: (batch,) scalars, (batch, 3) list columns."""
    out = {}
    for column in rows[0]:
        values = np.array([r[column] for r in rows])
        out[column] = tf.constant(values.astype(np.float32) if column == "x" else values)
    return out


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    d = tmp_path_factory.mktemp("modes")
    path = d / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows(N, 0)))
    return run_job(d, {**FEATURES, **UNRECONCILED}, [str(path)], "jsonl")


@pytest.fixture(scope="module")
def prep(arts):
    return arts.preprocessing(list(FEATURES), raw_shapes=RAW_SHAPES)


def _dataset(prep, rows, batch=32):
    labels = np.arange(len(rows), dtype=np.float32) % 2
    return tf.data.Dataset.from_tensor_slices((_raw(rows), labels)).batch(batch).map(
        lambda x, y: (prep.host_fn(x), y))


def _spec_kind(spec):
    return type(spec).__name__, tuple(spec.shape.as_list()), spec.dtype.name


def test_model_inputs_are_what_tf_data_yields(prep):
    element_spec = _dataset(prep, _rows(64, 1)).element_spec[0]
    assert set(element_spec) == set(FEATURES)
    traced = prep.feature_specs()
    inputs = prep.model_inputs()
    for name, spec in element_spec.items():
        assert _spec_kind(traced[name]) == _spec_kind(spec), name
        got = inputs[name]
        assert (tuple(got.shape), got.dtype, got.sparse, got.ragged) == (
            tuple(spec.shape.as_list()), spec.dtype.name, isinstance(spec, tf.SparseTensorSpec),
            isinstance(spec, tf.RaggedTensorSpec)), name
    # What the symbolic Keras path used to give instead, and what tf.data really yields.
    assert _spec_kind(element_spec["tv_multi_hot"]) == ("TensorSpec", (None, 8), "int64")
    assert _spec_kind(element_spec["tv_multi_hot_sparse"]) == ("SparseTensorSpec", (None, 8), "int64")
    assert _spec_kind(element_spec["tv_int_ragged"]) == ("RaggedTensorSpec", (None, None), "int64")
    assert _spec_kind(element_spec["sl_list_one_hot"]) == ("TensorSpec", (None, LIST_LEN, 8), "int64")
    assert _spec_kind(element_spec["tv_tf_idf"]) == ("TensorSpec", (None, 8), "float32")


def _dense(value):
    if isinstance(value, tf.SparseTensor):
        return tf.sparse.to_dense(value).numpy()
    if isinstance(value, tf.RaggedTensor):
        return value.to_list()
    return np.asarray(value)


def _adapt_config(feature):
    config = dict(feature.get("config", {}))
    if feature["layer"] == "IntegerLookup":
        config.setdefault("vocabulary_dtype", "int64")
    return config


def test_host_outputs_in_tf_data_equal_adapted_keras_layers(prep):
    """The reference: each lookup layer built by Keras and adapt()ed on the same rows
    (NumPy arrays), both run inside the same tf.data pipeline."""
    train, probe = _rows(N, 0), _rows(50, 2)
    probe[0].update(tag="unseen", tags=["unseen"] * LIST_LEN, code=99, codes=[99] * LIST_LEN, text="never seen")
    reference = {}
    for name, feature in FEATURES.items():
        if feature["layer"] not in ADAPTED:
            continue
        layer = getattr(keras.layers, feature["layer"])(**_adapt_config(feature))
        values = np.array([r[feature["source"]] for r in train])
        layer.adapt(values if values.ndim > 1 else values[:, None])
        reference[name] = layer
    assert len(reference) == 30
    raw = tf.data.Dataset.from_tensor_slices(_raw(probe)).batch(50)
    ours = next(iter(raw.map(prep.host_fn)))
    theirs = next(iter(raw.map(lambda x: {n: layer(prep._gather(n, x)) for n, layer in reference.items()})))
    for name in reference:
        assert type(ours[name]) is type(theirs[name]) and ours[name].dtype == theirs[name].dtype, name
        np.testing.assert_array_equal(np.array(_dense(ours[name]), dtype=object),
                                      np.array(_dense(theirs[name]), dtype=object), err_msg=name)


def _head(prep):
    """A model over every feature input: embeddings for ids, dense layers for the rest
    (sparse inputs included), ragged ids averaged."""
    inputs = prep.model_inputs()
    encoded = prep.device_outputs(inputs)
    parts = []
    for name in sorted(encoded):
        x, spec = encoded[name], prep.feature_specs()[name]
        if spec.dtype == tf.int64 and FEATURES[name].get("config", {}).get("output_mode", "int") == "int" \
                and FEATURES[name]["layer"] != "CategoryEncoding":
            size = FEATURES[name]["config"]["num_bins"] if FEATURES[name]["layer"] == "Hashing" \
                else prep.layers[name].vocabulary_size()
            x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(size, 2, name=f"{name}_emb")(x))
        elif isinstance(spec, tf.SparseTensorSpec):
            x = keras.layers.Dense(2, name=f"{name}_dense")(keras.ops.cast(x, "float32"))
        else:
            x = keras.layers.Flatten()(keras.ops.cast(x, "float32"))
        parts.append(x)
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Concatenate()(parts)))


def test_model_fits_predicts_and_serves_raw_columns(prep, tmp_path):
    model = _head(prep)
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(_dataset(prep, _rows(64, 3)).take(1), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    probe = _rows(40, 4)
    probe[0].update(tag="unseen", code=99, text="never seen")
    predicted = model.predict(_dataset(prep, probe, batch=40).map(lambda x, y: x), verbose=0)
    assert predicted.shape == (40, 1) and np.isfinite(predicted).all()
    # Raw columns in, the same predictions out; also after a .keras round trip.
    serving = prep.end_to_end(model)
    assert sorted(serving.input) == sorted(prep.raw_inputs()) == ["cat", "cats", "code", "codes", "tag", "tags", "text", "x"]
    np.testing.assert_allclose(np.asarray(serving(_raw(probe))), predicted, rtol=1e-6)
    serving.save(str(tmp_path / "serving.keras"))
    reloaded = keras.saving.load_model(str(tmp_path / "serving.keras"))
    np.testing.assert_allclose(np.asarray(reloaded(_raw(probe))), predicted, rtol=1e-6)


def test_preprocessing_model_and_golden_rows_for_every_mode(arts, prep):
    rows = _rows(20, 5)
    features = prep.preprocessing_model()(_raw(rows))
    host = prep.device_outputs(prep.host_fn(_raw(rows)))
    for name in FEATURES:
        np.testing.assert_array_equal(np.array(_dense(features[name]), dtype=object),
                                      np.array(_dense(host[name]), dtype=object), err_msg=name)
    # Golden outputs (what `prepro verify` compares) of every mode, sparse and ragged
    # included, from rows as JSON carries them (lists for list columns).
    golden = prepro.golden.feature_outputs(prep, rows)
    for name in FEATURES:
        want = _dense(host[name])
        if isinstance(want, list):  # ragged: one list per row
            assert golden[name].shape == (len(rows),) and golden[name].tolist() == want, name
        else:
            assert golden[name].dtype == want.dtype, name
            np.testing.assert_array_equal(golden[name], want, err_msg=name)


def test_serving_savedmodel_of_host_features_sparse_and_ragged_included(arts, tmp_path):
    """`export_serving` without a model and without device layers: the host features,
    sparse and ragged ones included, as the SavedModel's serve() returns them."""
    names = ["tv_int_ragged", "tv_multi_hot_sparse", "sl_tf_idf", "il_one_hot", "hash_int"]
    prep = arts.preprocessing(names)
    prep.export_serving(str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))  # keep a reference: it owns the tables
    raw = {c: v[:, None] for c, v in _raw(_rows(12, 7)).items() if c in prep.raw_specs()}
    served, want = loaded.serve(raw), prep.host_fn(raw)
    assert set(served) == set(names)
    for name in names:
        assert type(served[name]) is type(want[name]) and served[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(np.array(_dense(served[name]), dtype=object),
                                      np.array(_dense(want[name]), dtype=object), err_msg=name)


def test_ragged_one_hot_text_end_to_end(arts):
    prep = arts.preprocessing(list(UNRECONCILED))
    element_spec = tf.data.Dataset.from_tensor_slices(_raw(_rows(8, 6))).batch(4).map(prep.host_fn).element_spec
    assert _spec_kind(element_spec["tv_one_hot_split"]) == ("RaggedTensorSpec", (None, None, 8), "int64")
    inputs = prep.model_inputs()
    assert inputs["tv_one_hot_split"].ragged and tuple(inputs["tv_one_hot_split"].shape) == (None, None, 8)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(
        keras.ops.cast(inputs["tv_one_hot_split"], "float32"))))
    serving = prep.end_to_end(model)
    raw = {"text": _raw(_rows(8, 6))["text"]}
    np.testing.assert_array_equal(np.asarray(serving(raw)), np.asarray(model(prep.host_fn(raw))))


def test_keras_limit_sparse_category_encoding_in_a_graph():
    """Known Keras 3.15 limit (docs/training.md), why CategoryEncoding sparse=True is not
    in the matrix: in a TensorFlow graph (tf.data, a model) multi_hot and count fail as
    Keras casts the input to float32 first, and one_hot fails on an unknown batch size.
    When Keras fixes them, this fails and the docs must change."""
    batches = tf.data.Dataset.from_tensor_slices(np.array([[1, 3]], np.int64)).batch(1)
    multi_hot = keras.layers.CategoryEncoding(num_tokens=4, output_mode="multi_hot", sparse=True)
    with pytest.raises(TypeError, match="DataType float32 not in list of allowed values: int32, int64"):
        batches.map(multi_hot)
    one_hot = keras.layers.CategoryEncoding(num_tokens=4, output_mode="one_hot", sparse=True)
    with pytest.raises(TypeError, match="unsupported operand type"):
        batches.map(lambda x: one_hot(x[:, :1]))
