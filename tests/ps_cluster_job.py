"""A real ParameterServerStrategy cluster on localhost, run by tests/test_training.py in
its own process (connecting to a cluster changes TensorFlow's global eager context).

    python tests/ps_cluster_job.py ARTIFACTS RESULT.json

Starts 2 workers and 1 parameter server as in-process gRPC servers (as TensorFlow's PS
tutorial does), builds the artifact layers and a model under the strategy's scope,
trains with per-worker datasets whose map runs the host half, then evaluates fixed raw
batches on the workers and writes what the test checks: where tables and variables
live, the losses, and the workers' outputs next to a single-machine run's.
"""

import json
import os
import socket
import sys
import threading

import numpy as np

NUM_WORKERS, NUM_PS, STEPS = 2, 1, 12


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_cluster(tf):
    spec = tf.train.ClusterSpec({"worker": [f"localhost:{_port()}" for _ in range(NUM_WORKERS)],
                                 "ps": [f"localhost:{_port()}" for _ in range(NUM_PS)]})
    # Servers sharing one process share its inter-op threads: with 2 cores, a worker's
    # step waiting on the PS starves the PS (TensorFlow's PS tutorial sets this too).
    config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=NUM_WORKERS + 6)
    servers = [tf.distribute.Server(spec, job_name="worker", task_index=i, protocol="grpc", config=config)
               for i in range(NUM_WORKERS)]
    servers += [tf.distribute.Server(spec, job_name="ps", task_index=i, protocol="grpc", config=config)
                for i in range(NUM_PS)]
    return servers, tf.distribute.cluster_resolver.SimpleClusterResolver(spec, rpc_layer="grpc")


def lookup_tables(prep):
    """Every lookup table of the host layers (TextVectorization holds a StringLookup)."""
    tables = {}
    for name, layer in prep.host_layers.items():
        lookup = getattr(layer, "_lookup_layer", layer)
        if hasattr(lookup, "lookup_table"):
            tables[name] = lookup.lookup_table
    return tables


def main(artifacts: str, result_path: str) -> int:
    threading.Timer(600, lambda: os._exit(3)).start()  # never hang CI
    import keras
    import tensorflow as tf
    from tensorflow.python.distribute import ps_values
    import prepro
    from test_training import _columns, _head, _raw

    servers, resolver = start_cluster(tf)
    strategy = tf.distribute.ParameterServerStrategy(resolver)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        prep = prepro.load(artifacts).preprocessing()
        model = _head(prep)
        optimizer = keras.optimizers.SGD(0.01)

    tables = lookup_tables(prep)
    placement = {
        "tables": {name: {"type": type(t).__name__,
                          "per_worker_copies": len(t._distributed_table._values)
                          if isinstance(t, ps_values.DistributedTable) else 0}
                   for name, t in tables.items()},
        "variable_devices": sorted({v.value.device for v in model.trainable_variables}),
    }

    train = _columns(1024, 11)
    labels = (train["age"] / 100).astype(np.float32)
    raw_train = _raw(train)

    def dataset_fn():
        # Runs on each worker: its own copy of the data and of the lookup tables.
        ds = tf.data.Dataset.from_tensor_slices((raw_train, labels)).shuffle(1024, seed=0).batch(64)
        return ds.map(lambda x, y: (prep.host_fn(x), y)).repeat()

    iterator = iter(coordinator.create_per_worker_dataset(dataset_fn))

    @tf.function
    def train_step(it):
        def replica_fn(batch):
            x, y = batch
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(tf.squeeze(model(x, training=True), -1) - y))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        return strategy.run(replica_fn, args=(next(it),))

    losses = [coordinator.schedule(train_step, args=(iterator,)) for _ in range(STEPS)]
    coordinator.join()

    probe = _columns(256, 12)
    probe["thal"][:2], probe["cp"][:2] = "unseen", 99

    @tf.function
    def evaluate(raw):
        features = prep.host_fn(raw)
        return {"prediction": model(features), "thal": features["thal"], "note": features["note"]}

    batches = [{c: v[i:i + 64] for c, v in _raw(probe).items()} for i in range(0, 256, 64)]
    remote = [coordinator.schedule(evaluate, args=(b,)) for b in batches]
    coordinator.join()
    on_workers = [r.fetch() for r in remote]
    weights = model.get_weights()

    # The single-machine run: the same artifacts and weights, no strategy, in this process.
    local = prepro.load(artifacts).preprocessing()
    reference = _head(local)
    reference.set_weights(weights)
    single = []
    for b in batches:
        features = local.host_fn(b)
        single.append({"prediction": reference(features), "thal": features["thal"], "note": features["note"]})
    equal = {key: all(np.array_equal(np.asarray(w[key]), np.asarray(s[key])) for w, s in zip(on_workers, single))
             for key in ("prediction", "thal", "note")}
    result = {**placement, "losses": [float(np.asarray(l.fetch())) for l in losses],
              "equal_to_single_machine": equal,
              "oov_ids_on_workers": np.asarray(on_workers[0]["thal"])[:2].reshape(-1).tolist()}
    with open(result_path, "w") as f:
        json.dump(result, f, indent=1)
    os._exit(0)  # in-process servers never shut down cleanly


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(sys.argv[1], sys.argv[2]))
