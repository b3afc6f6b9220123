"""Mobile portability, as found with TensorFlow 2.21: each artifact-built layer's
exported model through the real TFLite converter (builtin ops only, and builtins plus
Select TF ops) and the real `tf.lite.Interpreter`, on the artifacts' golden rows.

What runs is compared with the golden outputs; what does not is asserted by its exact
error, so a TensorFlow that changes either makes this test fail (docs/portability.md
is the summary).
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import prepro.golden
from conftest import run_job, write_csv_columns

FEATURES = {
    "thal": {"source": "thal", "layer": "StringLookup"},
    "thal_token": {"source": "thal", "layer": "StringLookup", "config": {"invert": True}},
    "cp": {"source": "cp", "layer": "IntegerLookup"},
    "cp_value": {"source": "cp", "layer": "IntegerLookup", "config": {"invert": True}},
    "age": {"source": "age", "layer": "Normalization"},
    "oldpeak": {"source": "oldpeak", "layer": "Discretization", "config": {"num_bins": 4}},
    "sex": {"source": "sex", "layer": "CategoryEncoding", "config": {"num_tokens": 2, "output_mode": "one_hot"}},
    "patient": {"source": "patient", "layer": "Hashing", "config": {"num_bins": 16}},
    "note": {"source": "note", "layer": "TextVectorization", "config": {"output_sequence_length": 6}},
    "note_pairs": {"source": "note", "layer": "TextVectorization", "config": {"ngrams": 2, "output_mode": "multi_hot"}},
    # The whole string is the token: no string op but the lookup.
    "note_whole": {"source": "note", "layer": "TextVectorization", "config": {"standardize": None, "split": None}},
}
BUILTINS = [tf.lite.OpsSet.TFLITE_BUILTINS]
SELECT = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
NOT_CONVERTIBLE = "Could not translate MLIR to FlatBuffer"
NO_FLEX = ("Select TensorFlow op(s), included in the given model, is(are) not supported by this interpreter. "
           "Make sure you apply/link the Flex delegate before inference.")
FILE_TABLE = "hashtable need to be initialized before using"


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    d = tmp_path_factory.mktemp("tflite")
    rng = np.random.default_rng(3)
    n = 400
    columns = {"thal": rng.choice(["normal", "fixed", "reversible"], n), "cp": rng.integers(0, 5, n),
               "age": rng.normal(54, 9, n).round(0), "oldpeak": rng.exponential(1.0, n).round(1),
               "sex": rng.integers(0, 2, n), "patient": np.array([f"P{i}" for i in rng.integers(0, 300, n)]),
               "note": rng.choice(["chest pain", "no pain at rest", "pain on effort", "normal ecg"], n)}
    return run_job(d, FEATURES, [write_csv_columns(d / "train.csv", columns)], "csv")


@pytest.fixture(scope="module")
def golden(arts):
    return prepro.golden.read_golden(arts)


def _saved_model(model, tmp_path, name):
    path = str(tmp_path / name)
    model.export(path, format="tf_saved_model", verbose=False)
    return path


def _preprocessing(arts, tmp_path, features, in_memory=False):
    """A SavedModel of `features`' preprocessing (raw columns in, features out)."""
    model = arts.preprocessing(features, in_memory=in_memory).preprocessing_model()
    return _saved_model(model, tmp_path, "_".join(features) + ("_in_memory" if in_memory else ""))


def _convert(path, ops):
    converter = tf.lite.TFLiteConverter.from_saved_model(path)
    converter.target_spec.supported_ops = ops
    return converter.convert()


def _run(content, feed):
    """The stock interpreter's serving signature on `feed`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        interpreter = tf.lite.Interpreter(model_content=content)
    # Still there in 2.21, though its warning says it was to be deleted in 2.20.
    assert any("tf.lite.Interpreter is deprecated" in str(w.message) for w in caught)
    return interpreter.get_signature_runner("serving_default")(**feed)


def _golden_feed(arts, golden, features):
    rows, _ = golden
    return {c: t.numpy() for c, t in prepro.golden.raw_tensors(arts.preprocessing(features), rows).items()}


def _assert_runs_equal(arts, golden, tmp_path, name, ops, in_memory=False):
    content = _convert(_preprocessing(arts, tmp_path, [name], in_memory), ops)
    got = _run(content, _golden_feed(arts, golden, [name]))[name]
    want = golden[1][name]
    assert got.dtype == want.dtype and got.shape == want.shape, name
    np.testing.assert_array_equal(got, want, err_msg=name)


def _conversion_error(path, ops) -> str:
    with pytest.raises(Exception) as e:
        _convert(path, ops)
    assert type(e.value).__name__ == "ConverterError" and NOT_CONVERTIBLE in str(e.value)
    return str(e.value)


def _run_error(content, feed) -> str:
    with pytest.raises(RuntimeError) as e:
        _run(content, feed)
    return str(e.value)


# ------------------------------------------------------------------ natively (builtin ops), equal to golden rows

@pytest.mark.parametrize("name", ["oldpeak", "sex"])
def test_discretization_and_category_encoding_run_on_builtins_equal_to_golden(arts, golden, tmp_path, name):
    _assert_runs_equal(arts, golden, tmp_path, name, BUILTINS)


@pytest.mark.parametrize("name", ["thal", "note_whole"])
def test_in_memory_string_lookups_run_on_builtins_equal_to_golden(arts, golden, tmp_path, name):
    """StringLookup, and TextVectorization without standardize and split."""
    _assert_runs_equal(arts, golden, tmp_path, name, BUILTINS, in_memory=True)


def test_in_memory_inverse_string_lookup_runs_on_builtins(arts, tmp_path):
    """invert=True has no golden output (it takes ids): compared with the Keras layer."""
    layer = arts.layer("thal_token", in_memory=True)
    ids = keras.Input((1,), dtype="int64", name="ids")
    path = _saved_model(keras.Model({"ids": ids}, {"token": layer(ids)}), tmp_path, "thal_token")
    probe = np.arange(-1, 6, dtype=np.int64)[:, None]  # out-of-range ids included
    got = _run(_convert(path, BUILTINS), {"ids": probe})["token"]
    np.testing.assert_array_equal(got, np.asarray(layer(probe)))
    assert got.ravel().tolist()[:2] == [b"[UNK]", b"[UNK]"]


def test_normalization_converts_on_builtins_within_one_ulp(arts, golden, tmp_path):
    """The converter folds `(x - mean) / sqrt(variance)` into SUB then MUL by the constant
    reciprocal: not bit-identical to Keras, within one float32 ulp."""
    content = _convert(_preprocessing(arts, tmp_path, ["age"]), BUILTINS)
    got = _run(content, _golden_feed(arts, golden, ["age"]))["age"]
    want = golden[1]["age"]
    ulps = np.abs(got.view(np.int32).astype(np.int64) - want.view(np.int32))
    assert got.dtype == want.dtype and got.shape == want.shape
    assert ulps.max() == 1 and 0 < np.count_nonzero(ulps) < len(ulps)
    interpreter = tf.lite.Interpreter(model_content=content)
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert ops == ["RESHAPE", "SUB", "MUL"]


# ------------------------------------------------------------------ what does not run here

def test_file_backed_lookups_convert_but_their_table_is_never_filled(arts, golden, tmp_path):
    """A vocabulary file's TextFileInitializer is dropped: the converted table is empty."""
    content = _convert(_preprocessing(arts, tmp_path, ["thal"]), BUILTINS)
    assert FILE_TABLE in _run_error(content, _golden_feed(arts, golden, ["thal"]))
    with_select = _convert(_preprocessing(arts, tmp_path, ["thal"]), SELECT)
    assert FILE_TABLE in _run_error(with_select, _golden_feed(arts, golden, ["thal"]))
    ids = keras.Input((1,), dtype="int64", name="ids")
    path = _saved_model(keras.Model({"ids": ids}, {"token": arts.layer("thal_token")(ids)}), tmp_path, "inverse")
    assert FILE_TABLE in _run_error(_convert(path, BUILTINS), {"ids": np.zeros((2, 1), np.int64)})


@pytest.mark.parametrize("name, in_memory", [("cp", False), ("cp", True), ("cp_value", True)])
def test_integer_lookup_needs_select_ops_even_in_memory(arts, tmp_path, name, in_memory):
    """TFLite's builtin hash table maps string->int64 and int64->string, not int64->int64."""
    if name == "cp_value":
        ids = keras.Input((1,), dtype="int64", name="ids")
        path = _saved_model(keras.Model({"ids": ids}, {"v": arts.layer(name, in_memory=True)(ids)}), tmp_path, name)
    else:
        path = _preprocessing(arts, tmp_path, [name], in_memory)
    error = _conversion_error(path, BUILTINS)
    assert "'tf.HashTableV2' op is neither a custom op nor a flex op" in error
    content = _convert(path, SELECT)
    feed = {"ids" if name == "cp_value" else "cp": np.array([[1], [2]], np.int64)}
    error = _run_error(content, feed)
    assert NO_FLEX in error and "(FlexHashTableV2) failed to prepare" in error


@pytest.mark.parametrize("name, op", [("patient", "StringToHashBucketFast"), ("note", "StringLower")])
def test_hashing_and_text_vectorization_need_select_ops_the_interpreter_lacks(arts, golden, tmp_path, name, op):
    path = _preprocessing(arts, tmp_path, [name], in_memory=True)
    assert f"'tf.{op}' op is neither a custom op nor a flex op" in _conversion_error(path, BUILTINS)
    error = _run_error(_convert(path, SELECT), _golden_feed(arts, golden, [name]))
    assert NO_FLEX in error and f"(Flex{op}) failed to prepare" in error


def test_text_vectorization_with_ngrams_converts_not_even_with_select_ops(arts, tmp_path):
    path = _preprocessing(arts, tmp_path, ["note_pairs"], in_memory=True)
    assert "'tf.StringLower' op is neither a custom op nor a flex op" in _conversion_error(path, BUILTINS)
    # StringNGrams is not among the Select TF ops at all.
    assert "'tf.StringNGrams' op is neither a custom op nor a flex op" in _conversion_error(path, SELECT)


# ------------------------------------------------------------------ a mobile model

def test_mobile_end_to_end_model_of_the_native_layers(arts, golden, tmp_path):
    """The layers that convert natively, lookups in memory, in one end-to-end model:
    builtins only, features equal to the golden rows (Normalization within an ulp) and
    predictions close to Keras's."""
    features = ["age", "oldpeak", "sex", "thal"]
    prep = arts.preprocessing(features, in_memory=True)
    feed = _golden_feed(arts, golden, features)
    content = _convert(_preprocessing(arts, tmp_path, features, in_memory=True), BUILTINS)
    got = _run(content, feed)
    for name in ("oldpeak", "sex", "thal"):
        np.testing.assert_array_equal(got[name], golden[1][name], err_msg=name)
    np.testing.assert_array_max_ulp(got["age"], golden[1]["age"], maxulp=1)

    inputs = prep.model_inputs()
    encoded = prep.device_outputs(inputs)
    parts = [keras.ops.cast(encoded[n], "float32") for n in sorted(encoded)]
    head = keras.Model(inputs, keras.layers.Dense(1, name="score")(keras.layers.Concatenate()(parts)))
    serving = prep.end_to_end(head)
    path = _saved_model(serving, tmp_path, "end_to_end")
    predicted = _run(_convert(path, BUILTINS), feed)["output_0"]
    np.testing.assert_allclose(predicted, np.asarray(serving({k: tf.constant(v) for k, v in feed.items()})),
                               rtol=1e-5, atol=1e-6)


def test_device_half_converts_on_builtins_with_the_host_half_kept_outside(arts, golden, tmp_path):
    """Every layer, file-backed lookups included: a model that takes the features
    (`prep.model_inputs()`, what `host_fn` gives) holds only the device layers and an
    embedding, and converts with builtin ops; the host half runs before it."""
    features = ["age", "cp", "note", "oldpeak", "patient", "sex", "thal"]
    prep = arts.preprocessing(features)
    inputs = prep.model_inputs()
    encoded = prep.device_outputs(inputs)
    parts = [keras.ops.cast(encoded[n], "float32") for n in sorted(encoded) if n != "note"]
    parts.append(keras.ops.mean(keras.layers.Embedding(prep.layers["note"].vocabulary_size(), 4)(encoded["note"]), axis=1))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Concatenate()(parts)))
    host = prep.host_fn({c: tf.constant(v) for c, v in _golden_feed(arts, golden, features).items()})
    content = _convert(_saved_model(model, tmp_path, "device_half"), BUILTINS)
    predicted = _run(content, {n: np.asarray(t) for n, t in host.items()})["output_0"]
    np.testing.assert_allclose(predicted, np.asarray(model(host)), rtol=1e-5, atol=1e-6)
