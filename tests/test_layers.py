"""Artifact-built layers where training and serving happen: tf.data, .keras files, SavedModel."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import adapted_layer, run_job, write_jsonl

DOCS = ["The Brain is wider than the Sky", "For put them side by side",
        "The one the other will contain", "With ease and You beside"]


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layers")
    path = write_jsonl(tmp / "d.jsonl", [{"text": d, "tag": d.split()[0]} for d in DOCS])
    return run_job(tmp, {"review": {"source": "text", "layer": "TextVectorization",
                                    "config": {"output_sequence_length": 6}},
                         "tag": {"source": "tag", "layer": "StringLookup"}}, [path], "jsonl")


def test_layer_in_tf_data_pipeline(arts):
    layer = arts.layer("review")
    reference = adapted_layer("TextVectorization", {"output_sequence_length": 6}, DOCS)
    ds = tf.data.Dataset.from_tensor_slices(DOCS + ["unseen words here"]).batch(2).map(layer)
    got = np.concatenate([b.numpy() for b in ds])
    np.testing.assert_array_equal(got, reference(np.array(DOCS + ["unseen words here"], dtype=object)))


def test_keras_file_round_trip_in_a_fresh_process(arts, tmp_path):
    inputs = keras.Input(shape=(), dtype="string")
    model = keras.Model(inputs, arts.layer("review")(inputs))
    expected = model(tf.constant(DOCS)).numpy()
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "expected.npy", expected)
    script = textwrap.dedent(f"""
        import numpy as np, keras, tensorflow as tf
        m = keras.saving.load_model({str(tmp_path / 'm.keras')!r})
        np.testing.assert_array_equal(m(tf.constant({DOCS!r})).numpy(), np.load({str(tmp_path / 'expected.npy')!r}))
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().endswith("OK"), out.stderr[-2000:]


def test_savedmodel_export_serves_raw_strings(arts, tmp_path):
    inputs = keras.Input(shape=(), dtype="string")
    lookup = arts.layer("tag", output_mode="one_hot")
    model = keras.Model(inputs, lookup(inputs))
    model.export(str(tmp_path / "sm"))
    served = tf.saved_model.load(str(tmp_path / "sm"))
    probe = tf.constant(["The", "For", "nope"])
    np.testing.assert_array_equal(served.serve(probe).numpy(), model(probe).numpy())


def test_override_that_changes_state_is_refused(arts):
    with pytest.raises(ValueError, match="shapes the learned vocabulary"):
        arts.layer("tag", max_tokens=3)
    with pytest.raises(KeyError, match="no feature 'nope'"):
        arts.layer("nope")
