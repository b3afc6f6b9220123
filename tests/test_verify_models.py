"""`prepro verify --model` with every shape of model a user could hand it: partial
SavedModels are checked feature by feature, and anything it cannot check is one error
line with exit status 2, never a traceback.

Real Beam job, real Keras 3 exports (`model.export`, `tf.saved_model.save`), the real CLI.
"""

import csv
import re

import keras
import pytest
import tensorflow as tf

from conftest import run_job
from pipelines import cli
from test_training import _columns, _head

FEATURES = {
    "note": {"source": "note", "layer": "TextVectorization", "config": {"output_sequence_length": 4}},
    "thal": {"source": "thal", "layer": "StringLookup"},
    "cp": {"source": "cp", "layer": "IntegerLookup"},
    "age": {"source": "age", "layer": "Normalization"},
    # Maps ids back to tokens: no golden output (it takes a model's output, not a column).
    "thal_token": {"source": "thal", "layer": "StringLookup", "config": {"invert": True}},
}
COLUMNS = ("note", "thal", "cp", "age")


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    d = tmp_path_factory.mktemp("verify_models")
    columns = _columns(400, 7)
    with open(d / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(zip(*[columns[c] for c in COLUMNS]))
    return run_job(d, FEATURES, [str(d / "train.csv")], "csv")


def _export(model, path):
    model.export(str(path), format="tf_saved_model", verbose=False)
    return str(path)


def verify(capsys, arts, *args):
    """(exit status, stdout, stderr) of the real `prepro verify`."""
    status = cli.main(["verify", arts.root, *args])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, out, err, model, *fragments):
    assert status == 2 and out == "", out
    assert err.startswith(f"prepro verify: error: {model}: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def feature_lines(out):
    return dict(re.findall(r"^  (\S+) +(.+)$", out, re.MULTILINE))


# ------------------------------------------------------------------ partial models, feature by feature

def test_artifact_with_an_inverse_lookup_verifies_its_other_features(arts, capsys):
    status, out, _ = verify(capsys, arts)
    assert status == 0 and feature_lines(out) == {"age": "OK", "cp": "OK", "note": "OK", "thal": "OK"}


def test_partial_saved_model_is_checked_feature_by_feature(arts, tmp_path, capsys):
    path = _export(arts.preprocessing(["thal", "age"]).preprocessing_model(), tmp_path / "partial")
    status, out, _ = verify(capsys, arts, "--model", path)
    assert status == 0
    assert feature_lines(out) == {"age": "OK", "thal": "OK", "cp": "not in the model (not checked)",
                                  "note": "not in the model (not checked)"}
    assert out.splitlines()[-1] == "verify: OK (2 checked, 2 not in the model)"
    # Naming features restricts the check; a named feature the model lacks fails it.
    status, out, _ = verify(capsys, arts, "--model", path, "--features", "thal")
    assert status == 0 and feature_lines(out) == {"thal": "OK"}
    status, out, _ = verify(capsys, arts, "--model", path, "--features", "thal,cp")
    assert status == 1 and feature_lines(out) == {"thal": "OK", "cp": "MISSING: not in the model"}
    assert out.splitlines()[-1] == "verify: FAILED: named features not in the model: cp (1 checked, 1 not in the model)"


def test_partial_saved_model_with_a_skewed_feature_fails_on_that_feature(arts, tmp_path, capsys):
    prep = arts.preprocessing(["thal", "cp"])
    stale = list(reversed(arts.vocabulary("thal")))
    prep.layers["thal"] = keras.layers.StringLookup(vocabulary=stale, name=prep.layers["thal"].name)
    path = _export(prep.preprocessing_model(), tmp_path / "skewed")
    status, out, _ = verify(capsys, arts, "--model", path)
    lines = feature_lines(out)
    assert status == 1 and lines["cp"] == "OK" and lines["thal"].startswith("DIFFERS: row ")
    assert out.splitlines()[-1] == "verify: FAILED: outputs differ from the golden rows (2 checked, 2 not in the model)"


def test_saved_model_from_tf_saved_model_save_with_named_inputs(arts, tmp_path, capsys):
    """tf.saved_model.save with a signature that names the raw columns; its inputs are
    (batch,) vectors, which the golden rows' (batch, 1) columns are reshaped to."""
    prep = arts.preprocessing(["cp", "note"])
    model = prep.preprocessing_model()
    serve = tf.function(lambda cp, note: model({"cp": cp[:, None], "note": note[:, None]}),
                        input_signature=[tf.TensorSpec([None], tf.int64, name="cp"),
                                         tf.TensorSpec([None], tf.string, name="note")])
    tf.saved_model.save(model, str(tmp_path / "named"), signatures=serve)
    status, out, _ = verify(capsys, arts, "--model", str(tmp_path / "named"))
    assert status == 0 and feature_lines(out) == {"cp": "OK", "note": "OK", "age": "not in the model (not checked)",
                                                  "thal": "not in the model (not checked)"}


def test_outputs_that_are_not_features_are_passed_over(arts, tmp_path, capsys):
    prep = arts.preprocessing(["thal", "age"])
    raw = prep.raw_inputs()
    outputs = prep.preprocessing_model()(raw)
    path = _export(keras.Model(raw, {"thal": outputs["thal"], "score": outputs["age"] * 2}), tmp_path / "extra")
    status, out, _ = verify(capsys, arts, "--model", path)
    assert status == 0 and feature_lines(out)["thal"] == "OK" and "score" not in out
    assert out.splitlines()[-1] == "verify: OK (1 checked, 3 not in the model)"


def test_keras_models_full_partial_and_unrelated(arts, tmp_path, capsys):
    prep = arts.preprocessing()
    prep.end_to_end(_head(prep)).save(str(tmp_path / "e2e.keras"))  # predictions out: layers found by name
    status, out, _ = verify(capsys, arts, "--model", str(tmp_path / "e2e.keras"))
    assert status == 0 and set(feature_lines(out).values()) == {"OK"} and len(feature_lines(out)) == 4
    arts.preprocessing(["cp"]).preprocessing_model().save(str(tmp_path / "part.keras"))
    status, out, _ = verify(capsys, arts, "--model", str(tmp_path / "part.keras"))
    assert status == 0 and feature_lines(out)["cp"] == "OK" and "verify: OK (1 checked, 3 not in the model)" in out
    inputs = keras.Input((1,))
    keras.Model(inputs, keras.layers.Dense(1)(inputs)).save(str(tmp_path / "other.keras"))
    assert_one_line_error(*verify(capsys, arts, "--model", str(tmp_path / "other.keras")), str(tmp_path / "other.keras"),
                          "none of its layers is a feature's layer (looked for the names age_normalization, ")


def test_unknown_feature_names_are_a_usage_error(arts, capsys):
    status, out, err = verify(capsys, arts, "--features", "thal,bogus")
    assert status == 2 and out == "" and err.count("\n") == 1
    assert err == f"prepro verify: error: no feature 'bogus' in {arts.root}; its features: age, cp, note, thal\n"
    status, out, err = verify(capsys, arts, "--features", "thal_token")
    assert status == 2 and err == ("prepro verify: error: 'thal_token': inverse lookups (invert=True) take a model's "
                                   "output, not raw columns, so golden rows do not check them\n")
    with pytest.raises(SystemExit) as e:  # argparse's usage error
        cli.main(["verify", arts.root, "--features", ","])
    assert e.value.code == 2 and "expected feature names separated by commas" in capsys.readouterr().err


# ------------------------------------------------------------------ models verify cannot check: one line, exit 2

def _single_tensor(prep, raw):
    return keras.Model(raw, prep.preprocessing_model()(raw)["age"])


def _tensor_list(prep, raw):
    outputs = prep.preprocessing_model()(raw)
    return keras.Model(raw, [outputs["age"], outputs["thal"]])


def _unknown_keys(prep, raw):
    outputs = prep.preprocessing_model()(raw)
    return keras.Model(raw, {"x": outputs["age"], "y": outputs["thal"]})


def _renamed_input(prep, raw):
    inputs = {"AGE": keras.Input((1,), dtype="float32", name="AGE")}
    return keras.Model(inputs, {"age": prep.layers["age"](inputs["AGE"])})


def _other_dtype(prep, raw):
    inputs = {"age": keras.Input((1,), dtype="float64", name="age")}
    return keras.Model(inputs, {"age": prep.layers["age"](keras.ops.cast(inputs["age"], "float32"))})


def _other_shape(prep, raw):
    inputs = {"age": keras.Input((3,), dtype="float32", name="age")}
    return keras.Model(inputs, {"age": prep.layers["age"](inputs["age"][:, :1])})


def _feature_inputs(prep, raw):
    return _head(prep)  # takes the features (prep.model_inputs()), returns a prediction


def _end_to_end(prep, raw):
    return prep.end_to_end(_head(prep))


KERAS_EXPORTS = {  # name: (model builder, what the error says)
    "single_tensor": (_single_tensor, "its 'serving_default' signature returns a single tensor (an end-to-end "
                                      "model's predictions?), not features by name (age, cp, note, thal); export "
                                      "prep.preprocessing_model()"),
    "list": (_tensor_list, "returns a list of 2 tensors, not features by name"),
    "unknown_keys": (_unknown_keys, "returns the outputs x, y, not features by name"),
    "end_to_end": (_end_to_end, "returns a single tensor (an end-to-end model's predictions?)"),
    "renamed_input": (_renamed_input, "the model takes the input(s) AGE, which are not raw columns of the golden "
                                      "rows (age, cp, note, thal)"),
    "other_dtype": (_other_dtype, "the model takes input 'age' as float64, but the raw column is float32"),
    "other_shape": (_other_shape, "the model takes input 'age' of shape [None, 3], but the raw column has 1 value"),
    "feature_inputs": (_feature_inputs, "the model takes the features (age, cp, note, thal, as prep.model_inputs() "
                                        "gives them), not the raw columns: export prep.end_to_end(model)"),
}


@pytest.mark.parametrize("shape", sorted(KERAS_EXPORTS))
def test_exported_keras_model_that_verify_cannot_check(arts, tmp_path, capsys, shape):
    build, says = KERAS_EXPORTS[shape]
    prep = arts.preprocessing()
    path = _export(build(prep, prep.raw_inputs()), tmp_path / shape)
    assert_one_line_error(*verify(capsys, arts, "--model", path), path, says)


def test_keras_model_saved_with_tf_saved_model_save(arts, tmp_path, capsys):
    """Its default signature names the inputs by position (inputs, inputs_1)."""
    path = str(tmp_path / "tf_saved")
    tf.saved_model.save(arts.preprocessing(["thal", "age"]).preprocessing_model(), path)
    assert_one_line_error(*verify(capsys, arts, "--model", path), path,
                          "the model takes the input(s) inputs, inputs_1, which are not raw columns",
                          "export it with model.export(path, format='tf_saved_model')")


def _module_with(signatures):
    module = tf.Module()
    module.fns = list(signatures.values())
    return module


def test_saved_model_without_a_serving_signature(arts, tmp_path, capsys):
    identity = tf.function(lambda age: {"age": age}, input_signature=[tf.TensorSpec([None, 1], tf.float32, name="age")])
    cases = {"none": ({}, "the SavedModel has no serving signature"),
             "two": ({"a": identity, "b": identity},
                     "the SavedModel has no 'serving_default' signature, and several others (a, b)")}
    for name, (signatures, says) in cases.items():
        path = str(tmp_path / name)
        tf.saved_model.save(_module_with(signatures), path, signatures=signatures or None)
        assert_one_line_error(*verify(capsys, arts, "--model", path), path, says)


def test_paths_that_are_not_models(arts, tmp_path, capsys):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "notes.txt").write_text("x")
    (tmp_path / "garbage.keras").write_bytes(b"not a zip file")
    (tmp_path / "notes.txt").write_text("x")
    cases = {"dir": "a directory that is not a SavedModel (no saved_model.pb)",
             "garbage.keras": "cannot load the .keras model: not a zip archive",
             "notes.txt": "cannot load the Keras model: ValueError: File format not supported",
             "missing": "no such file or directory"}
    for name, says in cases.items():
        path = str(tmp_path / name)
        assert_one_line_error(*verify(capsys, arts, "--model", path), path, says)


def test_cli_process_prints_one_line_not_a_traceback(arts, tmp_path):
    """The installed entry point in a fresh process: an exported end-to-end model (the
    most likely mistake) gives exit status 2 and the error as the last line of stderr
    (TensorFlow's own start-up log lines may come before it), never a traceback."""
    import os
    import subprocess
    import sys
    prep = arts.preprocessing()
    path = _export(prep.end_to_end(_head(prep)), tmp_path / "serving")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**{k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}, "PYTHONPATH": root}
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "verify", arts.root, "--model", path],
                          capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert done.returncode == 2 and done.stdout == "", done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"prepro verify: error: {path}: its 'serving_default' signature "
                                                   f"returns a single tensor (an end-to-end model's predictions?)")
