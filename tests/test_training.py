"""Artifact-built layers where training and serving happen: the host half in tf.data,
the device half compiled with XLA, and the end-to-end model exported (.keras and
SavedModel) and reloaded in a fresh process with identical outputs.

Real Beam job, real Keras 3 / TensorFlow, real files and a real second process.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_job, write_csv_columns

N = 2000
FEATURES = {
    "note": {"source": "note", "layer": "TextVectorization", "config": {"output_sequence_length": 6}},
    "thal": {"source": "thal", "layer": "StringLookup"},
    "cp": {"source": "cp", "layer": "IntegerLookup", "config": {"output_mode": "one_hot"}},
    "age": {"source": "age", "layer": "Normalization"},
    "vitals": {"source": ["chol", "trestbps"], "layer": "Normalization"},
    "oldpeak": {"source": "oldpeak", "layer": "Discretization", "config": {"num_bins": 4, "output_mode": "one_hot"}},
    "sex": {"source": "sex", "layer": "CategoryEncoding", "config": {"num_tokens": 2, "output_mode": "one_hot"}},
    "patient": {"source": "patient", "layer": "Hashing", "config": {"num_bins": 16, "output_mode": "one_hot"}},
}
STRING_COLUMNS = ("note", "thal", "patient")
INT_COLUMNS = ("cp", "sex")


def _columns(n, seed):
    rng = np.random.default_rng(seed)
    return {
        "note": rng.choice(["chest pain", "no pain at rest", "pain on effort", "normal ecg"], n),
        "thal": rng.choice(["normal", "fixed", "reversible"], n),
        "cp": rng.integers(0, 5, n),
        "age": rng.normal(54, 9, n).round(0),
        "chol": rng.normal(246, 51, n).round(1),
        "trestbps": rng.normal(131, 17, n).round(0),
        "oldpeak": rng.exponential(1.0, n).round(1),
        "sex": rng.integers(0, 2, n),
        "patient": np.array([f"P{i}" for i in rng.integers(0, 300, n)]),
    }


def _raw(columns):
    """Raw rows as a tf.data pipeline sees them: one (batch,) tensor per column."""
    return {c: tf.constant(v.astype(str) if c in STRING_COLUMNS else v.astype(np.int64) if c in INT_COLUMNS
                           else v.astype(np.float32)) for c, v in columns.items()}


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    d = tmp_path_factory.mktemp("training")
    columns = _columns(N, 0)
    return run_job(d, FEATURES, [write_csv_columns(d / "train.csv", columns)], "csv")


@pytest.fixture(scope="module")
def prep(arts):
    return arts.preprocessing()


def _head(prep):
    """A small model on the feature inputs: device layers inside, embeddings for ints."""
    inputs = prep.model_inputs()
    encoded = prep.device_outputs(inputs)
    parts = []
    for name in sorted(encoded):
        x = encoded[name]
        if name in ("note", "thal"):  # int token ids -> embedding, averaged
            size = prep.layers[name].vocabulary_size()
            x = keras.ops.mean(keras.layers.Embedding(size, 4, name=f"{name}_embedding")(x), axis=1)
        parts.append(keras.ops.cast(x, "float32"))
    out = keras.layers.Dense(1, name="score")(keras.layers.Concatenate()(parts))
    return keras.Model(inputs, out)


def test_split_places_lookups_on_hosts_and_numeric_layers_on_device(prep):
    assert sorted(prep.host_layers) == ["cp", "note", "patient", "thal"]
    assert sorted(prep.device_layers) == ["age", "oldpeak", "sex", "vitals"]
    inputs = prep.model_inputs()
    assert inputs["vitals"].shape == (None, 2) and inputs["vitals"].dtype == "float32"
    assert inputs["note"].shape == (None, 6) and inputs["cp"].shape[-1] == prep.layers["cp"].vocabulary_size()
    assert prep.raw_inputs()["cp"].dtype == "int64" and prep.raw_inputs()["patient"].dtype == "string"


def test_host_fn_in_tf_data_equals_calling_the_layers(prep):
    columns = _columns(300, 1)
    columns["thal"][:3] = "unseen"  # OOV on the way
    ds = tf.data.Dataset.from_tensor_slices(_raw(columns)).batch(64).map(
        prep.host_fn, num_parallel_calls=tf.data.AUTOTUNE)
    batches = list(ds)
    assert len(batches) == 5
    eager = prep.host_fn(_raw(columns))  # no tf.data, no graph
    for name in FEATURES:
        got = np.concatenate([np.asarray(b[name]) for b in batches])
        np.testing.assert_array_equal(got, np.asarray(eager[name]), err_msg=name)
    # The host half really ran the lookups: ids, not strings, leave the pipeline.
    assert batches[0]["thal"].dtype == tf.int64 and np.asarray(eager["thal"])[:3].tolist() == [[0]] * 3  # the OOV index


def test_device_half_compiles_with_xla(prep):
    """TPU readiness without a TPU: the device layers inside one XLA cluster on CPU."""
    features = prep.host_fn(_raw(_columns(256, 2)))
    device = {n: features[n] for n in prep.device_layers}
    compiled = tf.function(lambda x: prep.device_outputs({**features, **x}), jit_compile=True)
    hlo = compiled.experimental_get_compiler_ir(device)(stage="hlo")
    assert "HloModule" in hlo
    got = compiled(device)
    want = prep.device_outputs(features)
    for name in prep.device_layers:
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want[name]), rtol=1e-6, err_msg=name)
    # And a whole training step, jit-compiled, on the host half's output.
    model = _head(prep)
    model.compile(optimizer="adam", loss="mse", jit_compile=True)
    ds = tf.data.Dataset.from_tensor_slices((_raw(_columns(256, 3)), np.ones(256, np.float32))).batch(64)
    history = model.fit(ds.map(lambda x, y: (prep.host_fn(x), y)), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


def test_end_to_end_model_exported_and_reloaded_in_a_fresh_process(prep, tmp_path):
    model = _head(prep)
    model.compile(optimizer="adam", loss="mse")
    train = _columns(512, 4)
    ds = tf.data.Dataset.from_tensor_slices((_raw(train), train["age"].astype(np.float32) / 100)).batch(64)
    model.fit(ds.map(lambda x, y: (prep.host_fn(x), y)), epochs=2, verbose=0, shuffle=False)

    probe = _columns(200, 5)
    probe["thal"][:2], probe["cp"][:2], probe["note"][:2] = "unseen", 99, "never seen words"
    training_time = np.asarray(model(prep.host_fn(_raw(probe))))  # the training-time path

    serving = prep.end_to_end(model)
    keras_path, saved_model = str(tmp_path / "model.keras"), str(tmp_path / "saved_model")
    serving.save(keras_path)
    serving.export(saved_model, format="tf_saved_model", verbose=False)
    np.savez(tmp_path / "probe.npz", **{c: v.astype(str) if c in STRING_COLUMNS else v for c, v in probe.items()})

    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, keras, tensorflow as tf
        probe = dict(np.load({str(tmp_path / "probe.npz")!r}))
        raw = {{c: tf.constant(v.astype(str) if v.dtype.kind == "U" else
                              v.astype(np.int64) if c in {INT_COLUMNS!r} else v.astype(np.float32))[:, None]
               for c, v in probe.items()}}
        from_keras = np.asarray(keras.saving.load_model({keras_path!r})(raw))
        loaded = tf.saved_model.load({saved_model!r})  # keep a reference: it owns the variables
        from_saved = np.asarray(loaded.serve(raw))
        np.save({str(tmp_path / "keras_out.npy")!r}, from_keras)
        np.save({str(tmp_path / "saved_out.npy")!r}, from_saved)
        print(json.dumps({{"keras": keras.__version__, "prepro_imported": "prepro" in sys.modules}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info == {"keras": keras.__version__, "prepro_imported": False}  # nothing of prepro needed
    np.testing.assert_array_equal(np.load(tmp_path / "keras_out.npy"), training_time)
    np.testing.assert_array_equal(np.load(tmp_path / "saved_out.npy"), training_time)


def test_parameter_server_cluster_with_per_worker_tables(arts, tmp_path):
    """A real in-process cluster on localhost: 2 workers, 1 parameter server, the
    coordinator. Lookup tables built under the strategy's scope are per-worker copies
    (each worker's tf.data map resolves lookups locally, never through the coordinator
    or the parameter servers); variables live on the parameter server; the workers'
    outputs equal a single-machine run with the same weights."""
    result_path = tmp_path / "ps.json"
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    job = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ps_cluster_job.py")
    done = subprocess.run([sys.executable, job, arts.root, str(result_path)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0 and result_path.exists(), done.stderr[-3000:]
    result = json.loads(result_path.read_text())
    assert result["tables"] == {name: {"type": "DistributedTable", "per_worker_copies": 2}
                                for name in ("cp", "note", "thal")}
    assert result["variable_devices"] == ["/job:ps/replica:0/task:0/device:CPU:0"]
    assert len(result["losses"]) == 12 and all(np.isfinite(result["losses"]))
    assert result["equal_to_single_machine"] == {"prediction": True, "thal": True, "note": True}
    assert result["oov_ids_on_workers"] == [0, 0]
