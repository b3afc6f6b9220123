"""One Keras backend (KERAS_BACKEND, read at import) on artifacts made by the TensorFlow
backend: `python backend_job.py ARTIFACTS WORK_DIR TF_ONLY_ARTIFACTS RESULT.json`
(TF_ONLY_ARTIFACTS: features with options Keras builds on TensorFlow only).

Writes what it saw as JSON for tests/test_backends.py, which compares backends.
"""

import json
import sys
import time

import numpy as np


def _lists(features):
    from prepro.model_outputs import to_numpy as _numpy
    return {n: _numpy(v).tolist() for n, v in sorted(features.items())}


def _head(prep, inputs):
    """The model of tests/test_training.py: embeddings for token ids, device layers inside."""
    import keras
    encoded = prep.device_outputs(inputs)
    parts = []
    for name in sorted(encoded):
        x = encoded[name]
        if name in ("note", "thal"):
            x = keras.ops.mean(keras.layers.Embedding(prep.layers[name].vocabulary_size(), 4,
                                                      name=f"{name}_embedding")(x), axis=1)
        parts.append(keras.ops.cast(x, "float32"))
    return keras.Model(inputs, keras.layers.Dense(1, name="score")(keras.layers.Concatenate()(parts)))


def main(root, work_dir, tf_only_root, result_path):
    started = time.perf_counter()
    import keras
    import tensorflow as tf
    import prepro
    import prepro.golden
    backend = keras.backend.backend()
    result = {"backend": backend, "seconds": {}}
    clock = time.perf_counter()

    def lap(what):
        nonlocal clock
        result["seconds"][what] = round(time.perf_counter() - clock, 2)
        clock = time.perf_counter()

    arts = prepro.load(root)
    prep = arts.preprocessing()
    rows, expected = prepro.golden.read_golden(arts)
    raw = prepro.golden.raw_tensors(prep, rows)
    lap("import_and_build")

    # The lookups called directly, as a user of this backend calls them (NumPy in).
    result["direct_lookups"] = {n: np.asarray(prep.layers[n](np.array([[r[n]]
                                                                         for r in rows]))).tolist()
                                for n in ("thal", "cp", "note")}
    # The host half eagerly and inside tf.data (TensorFlow whatever the backend).
    result["host_eager"] = _lists({n: v for n, v in prep.host_fn(raw).items() if prep.is_host(n)})
    batches = list(tf.data.Dataset.from_tensor_slices(raw).batch(8).map(prep.host_fn))
    result["host_tf_data"] = _lists({n: tf.concat([b[n] for b in batches], 0) for n in prep.host_layers})
    # Sparse and ragged feature inputs (sparse=True, ragged=True in a spec): where the
    # backend's keras.Input cannot take them, a BackendError naming feature and reason.
    result["input_kinds"] = {}
    for kind, spec in (("sparse", tf.SparseTensorSpec([None, 8], tf.int64)),
                       ("ragged", tf.RaggedTensorSpec([None, None], tf.int64))):
        try:
            prep._keras_input(f"{kind}_feature", spec)  # what model_inputs() does per feature
            result["input_kinds"][kind] = "ok"
        except prepro.training.BackendError as e:
            result["input_kinds"][kind] = str(e)
    result["feature_specs"] = {n: [type(s).__name__, s.shape.as_list(), s.dtype.name]
                               for n, s in prep.feature_specs().items()}
    lap("host_half")

    # The device half inside a model this backend compiles; fit and predict on tf.data.
    inputs = prep.model_inputs()
    device = keras.Model(inputs, {n: prep.layers[n](inputs[n]) for n in prep.device_layers})
    # XLA under TensorFlow as asked; Keras's default elsewhere (jax.jit under JAX; under
    # torch "auto" is eager: torch.compile recompiles per dtype and took 108 s here).
    jit = True if backend == "tensorflow" else "auto"
    device.compile(jit_compile=jit)
    result["jit_compile"] = device.jit_compile
    features = prep.host_fn(raw)
    predicted = device.predict({n: features[n] for n in inputs}, verbose=0, batch_size=16)
    result["device_compiled"] = {n: np.asarray(v).tolist() for n, v in sorted(predicted.items())}
    result["golden_expected"] = {n: expected[n].tolist() for n in prep.device_layers}
    model = _head(prep, prep.model_inputs())
    model.compile(optimizer="adam", loss="mse", jit_compile=jit)
    labels = np.linspace(0, 1, len(rows), dtype=np.float32)
    train = tf.data.Dataset.from_tensor_slices((raw, labels)).batch(8).map(lambda x, y: (prep.host_fn(x), y))
    history = model.fit(train, epochs=2, verbose=0)
    result["losses"] = [float(v) for v in history.history["loss"]]
    trained = model.predict(train.map(lambda x, y: x), verbose=0)
    result["predictions_finite"] = bool(np.isfinite(trained).all())
    lap("device_half_fit_predict")

    # The serving SavedModel (raw columns in), checked like `prepro verify --model`.
    try:
        prep.export_serving(f"{work_dir}/features")
        report = prepro.golden.verify(arts, model=f"{work_dir}/features")
        result["verify"] = {"ok": report.ok, "lines": report.lines()}
        within_one_ulp = prepro.golden.verify(arts, model=f"{work_dir}/features", max_ulps=1)
        result["verify_max_ulps_1"] = {"ok": within_one_ulp.ok, "lines": within_one_ulp.lines()}
        from pipelines import cli
        result["cli_verify_exit"] = cli.main(["verify", root, "--model", f"{work_dir}/features", "--max-ulps", "1"])
        prep.export_serving(f"{work_dir}/serving", model)
        serving = tf.saved_model.load(f"{work_dir}/serving")  # keep a reference: it owns the variables
        served = serving.serve(raw)
        result["served_equals_predict"] = bool(np.allclose(np.asarray(served), trained, rtol=1e-5, atol=1e-6))
    except prepro.training.BackendError as e:
        result["export_error"] = str(e)
    lap("export_and_verify")
    try:
        prep.end_to_end(model)
        result["end_to_end"] = "built"
    except prepro.training.BackendError as e:
        result["end_to_end"] = str(e)
    result["tf_only_layers"] = {}
    tf_only = prepro.load(tf_only_root)
    for name in tf_only.features:
        try:
            tf_only.layer(name)
            result["tf_only_layers"][name] = "built"
        except prepro.training.BackendError as e:
            result["tf_only_layers"][name] = str(e)
    result["seconds"]["total"] = round(time.perf_counter() - started, 2)
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:5])
