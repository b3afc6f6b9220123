"""Where each layer runs: lookups and text on the input hosts, numeric layers on the
device, and one end-to-end model for serving.

The Keras guide's advice for TPUs and `ParameterServerStrategy`: string lookups cannot
run on a TPU and are slow as part of a distributed model, so run them in the `tf.data`
pipeline, on the hosts that feed the devices; keep the numeric layers in the model; and
ship a model that takes raw features. `Preprocessing` gives those pieces from one
artifact:

>>> prep = prepro.load("artifacts/").preprocessing()
>>> ds = raw_ds.map(lambda x, y: (prep.host_fn(x), y))     # lookups, text, hashing: hosts
>>> inputs = prep.model_inputs()                           # one keras.Input per feature
>>> encoded = prep.device_outputs(inputs)                  # Normalization, ... on device
>>> model = keras.Model(inputs, head(encoded))
>>> serving = prep.end_to_end(model)                       # raw columns in, predictions out

Raw rows are a dict of columns: a scalar column as `(batch,)` or `(batch, 1)`, a list
column as `(batch, *shape)` (numeric: its declared `shape`; lookups, Hashing and
CategoryEncoding: `raw_shapes={"tags": (3,)}`). A feature's model input is exactly what
`host_fn` yields in tf.data (shape, dtype, sparse or ragged), found by tracing `host_fn`
with TensorFlow over the raw columns' specs; numeric features keep a batch axis and at
least one more: `(batch, 1)` for a scalar value, `(batch, k)` for k stacked columns.

The host half is TensorFlow whatever the Keras backend (tf.data is TensorFlow); the
device half runs on the backend. Models that take raw columns (`end_to_end`,
`preprocessing_model`) hold TensorFlow lookups, so they need the TensorFlow backend; on
another backend, `export_serving` writes the same serving SavedModel.
"""

import contextlib
from typing import Dict, Iterable, Mapping, Optional, Tuple

# Lookup tables and string ops stay on the input hosts (CPU); the rest compiles with XLA.
HOST_LAYERS = ("TextVectorization", "StringLookup", "IntegerLookup", "Hashing")
DEVICE_LAYERS = ("Normalization", "Discretization", "CategoryEncoding")


class BackendError(RuntimeError):
    """A feature the current Keras backend cannot run, with the reason."""


class Preprocessing:
    """The host half, the device half and the raw-input signature of some features."""

    def __init__(self, artifacts, features: Optional[Iterable[str]] = None,
                 raw_dtypes: Optional[Mapping[str, str]] = None, in_memory: bool = False,
                 raw_shapes: Optional[Mapping[str, Tuple[int, ...]]] = None):
        self.features = sorted(features if features is not None else artifacts.features)
        self.layers = {name: artifacts.layer(name, in_memory=in_memory) for name in self.features}
        self._specs = {name: artifacts.spec.features[name] for name in self.features}
        self._raw_dtypes = dict(raw_dtypes or {})
        self._raw_shapes = {c: tuple(s) for c, s in (raw_shapes or {}).items()}
        self._traced = None

    def is_host(self, name: str) -> bool:
        return self._specs[name].layer in HOST_LAYERS

    @property
    def host_layers(self) -> Dict[str, object]:
        return {n: layer for n, layer in self.layers.items() if self.is_host(n)}

    @property
    def device_layers(self) -> Dict[str, object]:
        return {n: layer for n, layer in self.layers.items() if not self.is_host(n)}

    def raw_dtype(self, column: str) -> str:
        """A column's raw dtype: string for text and string lookups, int64 for integer
        lookups and CategoryEncoding, float32 for numeric features; Hashing columns are
        strings unless `raw_dtypes` says otherwise."""
        if column in self._raw_dtypes:
            return self._raw_dtypes[column]
        kinds = {f.value_kind for f in self._specs.values() if column in f.sources or column == f.weight}
        kind = (kinds - {"hashable"} or {"string"}).pop()
        return {"string": "string", "int": "int64", "float": "float32"}[kind]

    def raw_shape(self, column: str) -> Tuple[int, ...]:
        """One row's shape of a column: a numeric feature's declared `shape`, else
        `raw_shapes` (a fixed-length list column), else (1,)."""
        for f in self._specs.values():
            if f.shape and column in f.sources:
                return tuple(f.shape)
        return self._raw_shapes.get(column, (1,))

    def _columns(self):
        return sorted({column for f in self._specs.values() for column in f.sources})

    def raw_specs(self) -> Dict[str, object]:
        """One `tf.TensorSpec` per source column, batch first: the raw rows' signature."""
        import tensorflow as tf
        return {c: tf.TensorSpec((None, *self.raw_shape(c)), self.raw_dtype(c), name=c) for c in self._columns()}

    def raw_inputs(self) -> Dict[str, object]:
        """One `keras.Input` per source column, named after it."""
        import keras
        return {c: keras.Input(shape=self.raw_shape(c), dtype=self.raw_dtype(c), name=c) for c in self._columns()}

    def host_fn(self, raw: Mapping[str, object], layers: Optional[Mapping[str, object]] = None) -> Dict[str, object]:
        """Raw columns -> every feature's model input: host layers applied, numeric
        values gathered (columns stacked, float32). TensorFlow ops on any backend: for
        `Dataset.map`, or eagerly on tf.Tensors; on symbolic Keras inputs it builds the
        host half of a TensorFlow-backend model. `layers` replaces some layers (`prepro verify`)."""
        import keras
        layers = {**self.layers, **(layers or {})}
        if any(isinstance(x, keras.KerasTensor) for x in raw.values()):
            return self._symbolic_host(raw, layers)
        out = {}
        with tensorflow_layers():
            for name in self.features:
                x = self._gather(name, raw)
                out[name] = layers[name](x) if self.is_host(name) else x
        return out

    def feature_specs(self) -> Dict[str, object]:
        """What `host_fn` yields per feature in tf.data (a `tf.TensorSpec`,
        `tf.SparseTensorSpec` or `tf.RaggedTensorSpec`, batch first), from a TensorFlow
        trace of `host_fn` over `raw_specs()`: the layers' own symbolic output specs
        differ (e.g. TextVectorization multi_hot: `(None, 1, N)` float32 symbolically,
        `(batch, N)` int64 when run)."""
        if self._traced is None:
            import tensorflow as tf
            traced = tf.function(self.host_fn, autograph=False).get_concrete_function(self.raw_specs())
            self._traced = {n: tf.type_spec_from_value(t) for n, t in traced.structured_outputs.items()}
        return dict(self._traced)

    def model_inputs(self) -> Dict[str, object]:
        """One `keras.Input` per feature, shaped, typed, sparse or ragged exactly as
        `host_fn` yields it in tf.data (`feature_specs`)."""
        return {n: self._keras_input(n, spec) for n, spec in self.feature_specs().items()}

    def device_outputs(self, inputs: Mapping[str, object],
                       layers: Optional[Mapping[str, object]] = None) -> Dict[str, object]:
        """Inside the model: device layers applied, host features passed through."""
        layers = {**self.layers, **(layers or {})}
        return {n: inputs[n] if self.is_host(n) else layers[n](inputs[n]) for n in self.features}

    def preprocessing_model(self, name: str = "preprocessing"):
        """Raw columns in, every feature's output out (both halves): the preprocessing
        alone, e.g. to export and check with `prepro verify --model`. TensorFlow backend
        (see `export_serving` for the others)."""
        import keras
        self._require_tensorflow_backend("preprocessing_model")
        raw = self.raw_inputs()
        return keras.Model(raw, self.device_outputs(self.host_fn(raw)), name=name)

    def end_to_end(self, model, name: str = "end_to_end"):
        """A model that takes raw columns (`raw_inputs`) and runs the host half, then
        `model` (which takes `model_inputs`): the model to export for serving.
        TensorFlow backend (see `export_serving` for the others)."""
        import keras
        self._require_tensorflow_backend("end_to_end")
        raw = self.raw_inputs()
        return keras.Model(raw, model(self.host_fn(raw)), name=name)

    def export_serving(self, path: str, model=None) -> None:
        """Writes a SavedModel whose `serve(raw columns)` runs the host half (TensorFlow
        ops) and then `model` (taking `model_inputs`) as the current backend exports it
        (`model.export(format="tf_saved_model")`: jax2tf under JAX). Without `model`, it
        returns every feature (`prepro verify --model path` checks it). Any backend whose
        Keras export writes a SavedModel."""
        import tempfile
        import tensorflow as tf
        _require_saved_model_export()
        device = model if model is not None else self._device_model() if self.device_layers else None
        with tempfile.TemporaryDirectory() as staging:
            exported = _exported(device, staging) if device is not None else None
            module = tf.Module()
            module.device_part = exported
            module.host_resources = self._host_resources()  # lookup tables the host half calls

            def serve(raw):
                features = self.host_fn(raw)
                if model is not None:
                    return exported.serve(features)
                out = {n: features[n] for n in self.host_layers}
                if exported is not None:
                    out.update(exported.serve({n: features[n] for n in self.device_layers}))
                return out

            module.serve = tf.function(serve, input_signature=[self.raw_specs()], autograph=False)
            # Serving needs no gradients; jax2tf's custom gradients cannot be saved again.
            options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
            tf.saved_model.save(module, path, signatures={"serving_default": module.serve}, options=options)

    def _device_model(self):
        """The device layers alone: their features in, their outputs out."""
        import keras
        inputs = {n: i for n, i in self.model_inputs().items() if not self.is_host(n)}
        return keras.Model(inputs, {n: self.layers[n](x) for n, x in inputs.items()}, name="device_half")

    def _host_resources(self):
        """The TensorFlow resources (lookup tables) the host layers hold: a SavedModel
        must track what its functions use. On the TensorFlow backend the layers are
        trackable themselves; on others their tables are found in their attributes."""
        import keras
        import tensorflow as tf
        if keras.backend.backend() == "tensorflow":
            return list(self.host_layers.values())
        found, seen = [], set()

        def visit(obj, depth=0):
            if id(obj) in seen or depth > 3:
                return
            seen.add(id(obj))
            if isinstance(obj, tf.__internal__.tracking.Trackable) and not isinstance(obj, keras.layers.Layer):
                found.append(obj)
                return
            if isinstance(obj, keras.layers.Layer):
                for value in vars(obj).values():
                    visit(value, depth + 1)
        for layer in self.host_layers.values():
            visit(layer)
        return found

    def _symbolic_host(self, raw, layers):
        """The host half on symbolic inputs (a model that takes raw columns). Keras's
        symbolic output shape of some layers differs from what they produce (TextVectorization
        multi_hot: `(None, 1, N)` for `(batch, N)`); a stock `Reshape` to the traced shape
        (a no-op when run) makes the rest of the model see what runs."""
        specs = self.feature_specs()
        out = {}
        for name in self.features:
            x = self._gather_symbolic(name, raw)
            if self.is_host(name):
                x = self._as_traced(name, layers[name](x), specs[name])
            out[name] = x
        return out

    def _as_traced(self, name, symbolic, spec):
        """`symbolic` with the traced shape where a reshape gives it; else as it is (a
        ragged output: Keras takes TextVectorization one_hot's symbolic (None, 1, None, N)
        into a ragged (None, None, N) input, tests/test_preprocessing_modes.py)."""
        import keras
        import tensorflow as tf
        want = tuple(spec.shape[1:])
        if _compatible(tuple(symbolic.shape[1:]), want):  # as Keras checks a model's inputs
            return symbolic
        if want.count(None) <= 1 and not isinstance(spec, tf.RaggedTensorSpec):
            try:  # a no-op when run: what runs already has this shape
                return keras.layers.Reshape(tuple(-1 if d is None else d for d in want),
                                            name=f"{name}_as_produced")(symbolic)
            except ValueError:
                pass
        return symbolic

    def _keras_input(self, name, spec):
        import keras
        import tensorflow as tf
        sparse, ragged = isinstance(spec, tf.SparseTensorSpec), isinstance(spec, tf.RaggedTensorSpec)
        try:
            return keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype.name, sparse=sparse, ragged=ragged,
                               name=name)
        except ValueError as e:
            kind = "ragged" if ragged else "sparse"
            raise BackendError(f"feature {name!r} yields {kind} tensors, which the {keras.backend.backend()} "
                               f"backend cannot take as a model input (Keras: {str(e).strip()}); set "
                               f"{kind}=False in its spec") from e

    @staticmethod
    def _require_tensorflow_backend(what: str) -> None:
        import keras
        if keras.backend.backend() != "tensorflow":
            raise BackendError(f"{what}: a model that takes raw columns holds the host half (string ops and "
                               f"lookup tables, TensorFlow only), which a {keras.backend.backend()} model "
                               f"cannot run; use prep.export_serving(path, model) for the serving SavedModel")

    def _gather(self, name: str, raw: Mapping[str, object]):
        """A feature's layer input from the raw columns, with TensorFlow ops (tf.data
        runs TensorFlow whatever the Keras backend)."""
        import tensorflow as tf
        f = self._specs[name]
        if not f.is_numeric:
            x = tf.convert_to_tensor(raw[f.source])
            return tf.expand_dims(x, -1) if x.shape.rank == 1 else x
        columns = [tf.cast(raw[c], tf.float32) for c in f.sources]
        if f.shape:
            return tf.reshape(columns[0], (-1, *f.shape))
        columns = [tf.reshape(c, (-1, 1)) for c in columns]
        return columns[0] if len(columns) == 1 else tf.concat(columns, axis=-1)

    def _gather_symbolic(self, name: str, raw: Mapping[str, object]):
        """`_gather` on symbolic Keras inputs, with Keras ops (a model's graph)."""
        from keras import ops
        f = self._specs[name]
        if not f.is_numeric:
            x = raw[f.source]
            return ops.expand_dims(x, -1) if len(x.shape) == 1 else x
        columns = [ops.cast(raw[c], "float32") for c in f.sources]
        if f.shape:
            return ops.reshape(columns[0], (-1, *f.shape))
        columns = [ops.reshape(c, (-1, 1)) for c in columns]
        return columns[0] if len(columns) == 1 else ops.concatenate(columns, axis=-1)


def _exported(model, staging: str):
    """`model` as the current backend exports it to a SavedModel, loaded back."""
    import keras
    import tensorflow as tf
    try:
        model.export(staging, format="tf_saved_model", verbose=False)
    except Exception as e:
        raise BackendError(f"export_serving: Keras cannot export a model as a SavedModel with the "
                           f"{keras.backend.backend()} backend: {type(e).__name__}: "
                           f"{(str(e).strip().splitlines() or [''])[0]}") from e
    return tf.saved_model.load(staging)


def _require_saved_model_export() -> None:
    """Keras 3.15 writes a SavedModel from a torch model through torch_xla's StableHLO
    (keras/src/backend/torch/export.py); without it, say so rather than fail inside."""
    import importlib.util
    import keras
    if keras.backend.backend() == "torch" and importlib.util.find_spec("torch_xla") is None:
        raise BackendError("export_serving: Keras exports a torch model as a SavedModel through torch_xla, "
                           "which is not installed; export with the tensorflow or jax backend (the same "
                           "artifacts and weights give the same features)")


def _compatible(shape, other) -> bool:
    """Same rank, and each axis equal or unknown on either side."""
    return len(shape) == len(other) and all(a is None or b is None or a == b for a, b in zip(shape, other))


def _size(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@contextlib.contextmanager
def tensorflow_layers():
    """Keras preprocessing layers called inside run on the TensorFlow backend, as they
    do in tf.data, whatever `KERAS_BACKEND` is: eager host-half calls (tests, golden
    rows, `prepro verify`) then give the TensorFlow tensors tf.data gives. Keras has no
    public switch for this; `TFGraphScope` is what its own data layers check
    (`keras.src.layers.preprocessing.data_layer`)."""
    from keras.src.utils.backend_utils import TFGraphScope
    with TFGraphScope():
        yield
