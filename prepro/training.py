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
column with a declared `shape` as `(batch, *shape)`. Every feature's model input keeps
a batch axis and at least one more: `(batch, 1)` for a scalar value, `(batch, k)` for k
stacked columns, the layer's own output shape for host features.
"""

from typing import Dict, Iterable, Mapping, Optional

# Lookup tables and string ops stay on the input hosts (CPU); the rest compiles with XLA.
HOST_LAYERS = ("TextVectorization", "StringLookup", "IntegerLookup", "Hashing")
DEVICE_LAYERS = ("Normalization", "Discretization", "CategoryEncoding")


class Preprocessing:
    """The host half, the device half and the raw-input signature of some features."""

    def __init__(self, artifacts, features: Optional[Iterable[str]] = None,
                 raw_dtypes: Optional[Mapping[str, str]] = None, in_memory: bool = False):
        self.features = sorted(features if features is not None else artifacts.features)
        self.layers = {name: artifacts.layer(name, in_memory=in_memory) for name in self.features}
        self._specs = {name: artifacts.spec.features[name] for name in self.features}
        self._raw_dtypes = dict(raw_dtypes or {})

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

    def raw_inputs(self) -> Dict[str, object]:
        """One `keras.Input` per source column, named after it."""
        import keras
        shapes = {}
        for f in self._specs.values():
            for column in f.sources:
                shapes[column] = tuple(f.shape) if f.shape else (1,)
        return {c: keras.Input(shape=shapes[c], dtype=self.raw_dtype(c), name=c) for c in sorted(shapes)}

    def host_fn(self, raw: Mapping[str, object], layers: Optional[Mapping[str, object]] = None) -> Dict[str, object]:
        """Raw columns -> every feature's model input: host layers applied, numeric
        values gathered (columns stacked, float32). For `Dataset.map`; also works on
        symbolic Keras inputs. `layers` replaces some of the layers (`prepro verify`)."""
        layers = {**self.layers, **(layers or {})}
        out = {}
        for name in self.features:
            x = self._gather(name, raw)
            out[name] = layers[name](x) if self.is_host(name) else x
        return out

    def model_inputs(self) -> Dict[str, object]:
        """One `keras.Input` per feature, shaped and typed as `host_fn` produces it."""
        import keras
        symbolic = self.host_fn(self.raw_inputs())
        return {n: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=n) for n, t in symbolic.items()}

    def device_outputs(self, inputs: Mapping[str, object],
                       layers: Optional[Mapping[str, object]] = None) -> Dict[str, object]:
        """Inside the model: device layers applied, host features passed through."""
        layers = {**self.layers, **(layers or {})}
        return {n: inputs[n] if self.is_host(n) else layers[n](inputs[n]) for n in self.features}

    def preprocessing_model(self, name: str = "preprocessing"):
        """Raw columns in, every feature's output out (both halves): the preprocessing
        alone, e.g. to export and check with `prepro verify --model`."""
        import keras
        raw = self.raw_inputs()
        return keras.Model(raw, self.device_outputs(self.host_fn(raw)), name=name)

    def end_to_end(self, model, name: str = "end_to_end"):
        """A model that takes raw columns (`raw_inputs`) and runs the host half, then
        `model` (which takes `model_inputs`): the model to export for serving."""
        import keras
        raw = self.raw_inputs()
        return keras.Model(raw, model(self.host_fn(raw)), name=name)

    def _gather(self, name: str, raw: Mapping[str, object]):
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

