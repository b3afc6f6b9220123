"""A TPU pod's layout, simulated on one CPU host with 8 devices:
`python pod_job.py ARTIFACTS WORK_DIR RESULT.json`.

KERAS_BACKEND=jax (with XLA_FLAGS=--xla_force_host_platform_device_count=8):
`keras.distribution.DataParallel` over the 8 devices, then `ModelParallel` on a 2 x 4
mesh with a LayoutMap sharding an Embedding over its vocabulary. KERAS_BACKEND=tensorflow:
`tf.distribute.MirroredStrategy` over 8 logical CPU devices. The host half runs in
tf.data either way; the device half and the model run sharded. Writes what it saw as
JSON for tests/test_backends.py: features and predictions compared with a single-device
run of the same layers and weights.
"""

import json
import sys
import time

import numpy as np

DEVICES = 8
BATCH = 16  # the 16 golden rows: 2 per device


def _head(prep, inputs, embedding_rows):
    """Token ids -> embeddings (rows padded so the vocabulary axis splits evenly over
    the model axis), device layers inside, one score."""
    import keras
    encoded = prep.device_outputs(inputs)
    parts = []
    for name in sorted(encoded):
        x = encoded[name]
        if name in ("note", "thal"):
            x = keras.ops.mean(keras.layers.Embedding(embedding_rows, 4, name=f"{name}_embedding")(x), axis=1)
        parts.append(keras.ops.cast(x, "float32"))
    return keras.Model(inputs, keras.layers.Dense(1, name="score")(keras.layers.Concatenate()(parts)))


def _device_model(prep):
    import keras
    inputs = {n: i for n, i in prep.model_inputs().items() if not prep.is_host(n)}
    return keras.Model(inputs, {n: prep.layers[n](x) for n, x in inputs.items()})


class Run:
    def __init__(self, root):
        import prepro
        import prepro.golden
        import tensorflow as tf
        self.arts = prepro.load(root)
        self.rows, self.expected = prepro.golden.read_golden(self.arts)
        self.prep = self.arts.preprocessing()
        self.raw = prepro.golden.raw_tensors(self.prep, self.rows)
        vocabulary = max(self.prep.layers[n].vocabulary_size() for n in ("note", "thal"))
        self.embedding_rows = -(-vocabulary // DEVICES) * DEVICES
        self.labels = np.linspace(0, 1, BATCH, dtype=np.float32)
        self.tf = tf

    def dataset(self, prep):
        """The host half in tf.data, as each input host of a pod runs it."""
        tf = self.tf
        return tf.data.Dataset.from_tensor_slices((self.raw, self.labels)).batch(BATCH).map(
            lambda x, y: (prep.host_fn(x), y))

    def features(self, prep):
        host = prep.host_fn(self.raw)
        out = _device_model(prep).predict({n: host[n] for n in prep.device_layers}, batch_size=BATCH, verbose=0)
        return {n: np.asarray(v) for n, v in out.items()}

    def train(self, prep, jit_compile="auto"):
        import keras
        keras.utils.set_random_seed(7)
        model = _head(prep, prep.model_inputs(), self.embedding_rows)
        model.compile(optimizer="adam", loss="mse", jit_compile=jit_compile)
        losses = model.fit(self.dataset(prep).repeat(3), epochs=1, verbose=0).history["loss"]
        return model, [float(v) for v in losses]

    def predictions(self, model, prep):
        return np.asarray(model.predict(self.dataset(prep).map(lambda x, y: x), verbose=0))


def _bits_equal(a, b):
    return set(a) == set(b) and all(a[n].dtype == b[n].dtype and np.array_equal(a[n], b[n]) for n in a)


def jax_pod(run, result):
    import jax
    import keras
    devices = jax.devices()
    result["devices"] = [d.platform for d in devices]
    single_features = run.features(run.prep)
    single_model, _ = run.train(run.prep)

    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    model, losses = run.train(run.prep)
    result["data_parallel"] = {
        "losses": losses,
        "data_layout": list(keras.distribution.distribution().get_data_layout((BATCH, 1)).axes),
        "dense_kernel_sharding": str(model.get_layer("score").kernel.value.sharding.spec),
        "features_equal_single_device": _bits_equal(run.features(run.prep), single_features),
        "prediction_ulps_from_single_device": _same_weights_predictions(run, model, single_model),
    }

    mesh = keras.distribution.DeviceMesh((2, DEVICES // 2), ["batch", "model"], devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["note_embedding/embeddings"] = ("model", None)  # vocabulary rows split over 4 devices
    keras.distribution.set_distribution(keras.distribution.ModelParallel(layout_map=layout_map,
                                                                         batch_dim_name="batch"))
    model, losses = run.train(run.prep)
    table = model.get_layer("note_embedding").embeddings.value
    result["model_parallel"] = {
        "losses": losses,
        "embedding_sharding": str(table.sharding.spec),
        "embedding_shard_shapes": sorted({tuple(s.data.shape) for s in table.addressable_shards}),
        "embedding_shape": list(table.shape),
        "features_equal_single_device": _bits_equal(run.features(run.prep), single_features),
        "prediction_ulps_from_single_device": _same_weights_predictions(run, model, single_model),
    }
    keras.distribution.set_distribution(None)


def _same_weights_predictions(run, model, single_model):
    """How far the distributed model's predictions are from the single-device model's
    with the same weights (copied into it, then back), in float32 ulps (0: bit for bit)."""
    trained = single_model.get_weights()
    single_model.set_weights(model.get_weights())
    ours = run.predictions(model, run.prep)
    import keras
    distribution = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    theirs = run.predictions(single_model, run.prep)
    keras.distribution.set_distribution(distribution)
    single_model.set_weights(trained)
    return _ulps(ours, theirs)


def _ulps(a, b):
    return float(np.max(np.abs(a - b) / np.spacing(np.abs(b).astype(np.float32))))


def tf_pod(run, result):
    import prepro
    tf = run.tf
    single_features = run.features(run.prep)
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(DEVICES)])
    with strategy.scope():  # lookup tables and variables under the strategy, as a TPU job builds them
        prep = prepro.load(run.arts.root).preprocessing()
        try:
            run.train(prep, jit_compile=True)
            xla_error = None
        except Exception as e:  # XLA on CPU compiles for one device: logical CPUs cannot share it
            xla_error = next((line.strip() for line in str(e).splitlines() if "Trying to access" in line), str(e))
        model, losses = run.train(prep, jit_compile=False)
        features = run.features(prep)  # the device model built and run under the strategy
    kernel = model.get_layer("score").kernel
    result["mirrored"] = {
        "xla_error": xla_error,
        "replicas": strategy.num_replicas_in_sync,
        "model_replicas": model.distribute_strategy.num_replicas_in_sync,
        "losses": losses,
        "kernel_copies": len(getattr(kernel.value, "values", ())),
        "features_equal_single_device": _bits_equal(features, single_features),
    }
    single = _head(run.prep, run.prep.model_inputs(), run.embedding_rows)
    single.set_weights(model.get_weights())
    result["mirrored"]["prediction_ulps_from_single_device"] = _ulps(
        run.predictions(model, prep), run.predictions(single, run.prep))


def main(root, work_dir, result_path):
    started = time.perf_counter()
    import keras
    backend = keras.backend.backend()
    if backend == "tensorflow":  # before TensorFlow initializes its devices
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES)
    run = Run(root)
    result = {"backend": backend}
    (tf_pod if backend == "tensorflow" else jax_pod)(run, result)
    result["seconds"] = round(time.perf_counter() - started, 2)
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
