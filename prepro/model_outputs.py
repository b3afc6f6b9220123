"""What a model a user hands `prepro verify` computes for each feature on the golden rows.

Two kinds of model are understood:

- a Keras model (`.keras`, or legacy `.h5`): its layers named like the artifact's
  layers (`arts.layer(name).name`) are applied to the features' raw columns;
- a TensorFlow SavedModel directory (`model.export(path, format="tf_saved_model")` or
  `tf.saved_model.save`): its serving signature is called with the raw columns it
  names, and its outputs named like features are that feature's output.

Either may cover only some features: the others are absent from the result. Anything
that makes a model uncheckable (not a model, no signature, inputs that are not raw
columns, no output or layer that is a feature) is a one-line `ModelError`; a feature
whose layer fails on the rows is reported as text in its place.
"""

import os
import re
import zipfile
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from prepro import artifacts as artifacts_lib

# How to make a model verify can read, appended to the errors that call for it.
EXPORT_HINT = ("export prep.preprocessing_model() (raw columns in, a dict of features out), or verify "
               "the .keras model, whose layers are found by name")


class ModelError(ValueError):
    """The model cannot be checked at all (as opposed to a feature that differs)."""


def first_line(e: BaseException) -> str:
    return artifacts_lib.one_line((str(e).strip().splitlines() or [""])[0], 300)


def _error(path: str, text: str) -> ModelError:
    return ModelError(artifacts_lib.one_line(f"{path}: {text}", 800))


def _failed(path: str, what: str, e: BaseException) -> ModelError:
    return _error(path, f"{what}: {type(e).__name__}: {first_line(e)}")


def to_numpy(value) -> np.ndarray:
    import tensorflow as tf
    if isinstance(value, tf.SparseTensor):  # sparse=True outputs (a SparseTensor has no to_dense method)
        value = tf.sparse.to_dense(value)
    if isinstance(value, tf.RaggedTensor):  # ragged=True
        return _rows(value.to_list())
    return np.asarray(value)


def _rows(rows) -> np.ndarray:
    """One object per row, whatever their lengths (np.array would make a 2-D array of
    equal-length rows)."""
    out = np.empty(len(rows), dtype=object)
    for i, row in enumerate(rows):
        out[i] = row
    return out


def layer_outputs(prep, raw, layers: Mapping[str, Any]) -> Dict[str, Any]:
    """Each feature's output with `layers[name]` (features without one are left out), or
    what went wrong, as text, for a layer that fails. A feature's output is its layer
    applied to its gathered raw columns, whether it runs on the host or the device, as
    `Preprocessing.host_fn` then `device_outputs` compute it."""
    out = {}
    for name in prep.features:
        if layers.get(name) is None:
            continue
        try:
            out[name] = to_numpy(layers[name](prep._gather(name, raw)))
        except Exception as e:
            out[name] = f"fails on the golden rows: {type(e).__name__}: {first_line(e)}"
    return out


def model_outputs(prep, raw, path: str, custom_objects=None) -> Tuple[str, Dict[str, Any]]:
    """(what was checked, {feature: output array or failure text}) for the model at
    `path`: a SavedModel if it is a directory, else a Keras model file."""
    import tensorflow as tf
    if not _exists(tf, path):
        raise _error(path, "no such file or directory")
    if tf.io.gfile.isdir(path):
        return _saved_model_outputs(prep, raw, path)
    return path, _keras_model_outputs(prep, raw, path, custom_objects)


def _exists(tf, path: str) -> bool:
    try:
        return tf.io.gfile.exists(path)
    except Exception as e:  # an unreachable bucket, a scheme TensorFlow does not know
        raise _failed(path, "cannot reach the model", e) from e


# ------------------------------------------------------------------ Keras models

def _keras_model_outputs(prep, raw, path: str, custom_objects) -> Dict[str, Any]:
    import keras
    if path.endswith(".keras") and os.path.isfile(path) and not zipfile.is_zipfile(path):
        # Keras says "File not found" for a .keras file that is not a zip archive.
        raise _error(path, "cannot load the .keras model: not a zip archive (a .keras file is one)")
    try:
        loaded = keras.saving.load_model(path, custom_objects=custom_objects or None)
    except Exception as e:  # not a zip, another format, a class it cannot rebuild...
        raise _failed(path, "cannot load the Keras model", e) from e
    found = {}
    for layer in _all_layers(loaded):
        found.setdefault(layer.name, layer)
    matched = {n: found[layer.name] for n, layer in prep.layers.items() if layer.name in found}
    if not matched:
        names = ", ".join(sorted(layer.name for layer in prep.layers.values()))
        raise _error(path, f"none of its layers is a feature's layer (looked for the names {names}); build "
                           f"the model with prepro's layers (arts.layer(name) or arts.preprocessing())")
    return layer_outputs(prep, raw, matched)


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


# ------------------------------------------------------------------ SavedModels

def _saved_model_outputs(prep, raw, path: str) -> Tuple[str, Dict[str, Any]]:
    import tensorflow as tf
    if not any(tf.io.gfile.exists(f"{path.rstrip('/')}/{f}") for f in ("saved_model.pb", "saved_model.pbtxt")):
        raise _error(path, "a directory that is not a SavedModel (no saved_model.pb); give a SavedModel "
                           "directory or a .keras file")
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:
        raise _failed(path, "cannot load the SavedModel", e) from e
    signature, fn = _serving_signature(loaded, path)
    feed = _signature_feed(fn, raw, path, prep)
    try:
        result = fn(**feed)
    except Exception as e:
        raise _failed(path, f"its {signature!r} signature fails on the golden rows", e) from e
    if not isinstance(result, Mapping):  # TensorFlow's signatures return dicts; a hand-made object may not
        raise _error(path, f"its {signature!r} signature returns {type(result).__name__}, not a dict of outputs")
    features = [k for k in result if k in prep.features]
    if not features:
        raise _error(path, f"its {signature!r} signature returns {_describe_outputs(loaded, result)}, not "
                           f"features by name ({', '.join(prep.features)}); {EXPORT_HINT}")
    out = {}
    for name in features:
        try:
            out[name] = to_numpy(result[name])
        except Exception as e:
            out[name] = f"an output that is not an array: {type(e).__name__}: {first_line(e)}"
    return f"{path} (signature {signature!r})", out


def _serving_signature(loaded, path: str):
    """("serving_default", fn), or the one signature there is: signatures take named
    tensors and return a dict, whatever exported them (Keras's `export` writes
    `serving_default` beside `serve`; `tf.saved_model.save` writes it for a Keras model)."""
    signatures = dict(getattr(loaded, "signatures", None) or {})
    if "serving_default" in signatures:
        return "serving_default", signatures["serving_default"]
    if len(signatures) == 1:
        return next(iter(signatures.items()))
    if not signatures:
        raise _error(path, "the SavedModel has no serving signature; export the model with "
                           "model.export(path, format='tf_saved_model')")
    raise _error(path, f"the SavedModel has no 'serving_default' signature, and several others "
                       f"({', '.join(sorted(signatures))}): it is not clear which serves")


def _signature_feed(fn, raw: Mapping[str, Any], path: str, prep) -> Dict[str, Any]:
    """The golden rows' raw columns the signature takes, by name, shaped as it takes them;
    a ModelError if it takes anything else."""
    try:
        _, wants = fn.structured_input_signature
        wants = dict(wants)
    except Exception as e:  # not a signature function as TensorFlow writes them
        raise _failed(path, "cannot read the serving signature's inputs", e) from e
    fits_raw = all(name in raw and spec.dtype == raw[name].dtype for name, spec in wants.items())
    if not fits_raw and _takes_features(wants, prep):
        raise _error(path, f"the model takes the features ({', '.join(sorted(wants))}, as prep.model_inputs() "
                           f"gives them), not the raw columns: export prep.end_to_end(model) or "
                           f"prep.preprocessing_model() instead")
    unknown = sorted(set(wants) - set(raw))
    if unknown:
        hint = ("; tf.saved_model.save names a Keras 3 model's inputs by position: export it with "
                "model.export(path, format='tf_saved_model'), which keeps the column names"
                if all(re.fullmatch(r"inputs(_\d+)?", name) for name in unknown) else "")
        raise _error(path, f"the model takes the input(s) {', '.join(unknown)}, which are not raw columns "
                           f"of the golden rows ({', '.join(sorted(raw))}){hint}")
    return {name: _fit(path, name, spec, raw[name]) for name, spec in wants.items()}


def _takes_features(wants: Mapping[str, Any], prep) -> bool:
    """Whether every input is a feature as `prep.model_inputs()` types it (a model
    trained on the host half's output, without it)."""
    if not set(wants) <= set(prep.features):
        return False
    features = prep.model_inputs()
    return all(spec.dtype == features[name].dtype and spec.shape[1:].is_compatible_with(features[name].shape[1:])
               for name, spec in wants.items())


def _fit(path: str, name: str, spec, column):
    """A raw column as the signature takes it: same dtype (never converted: a model that
    reads another type is not the one the artifacts describe), shape (batch, 1) or the
    same values in another shape (a scalar column as (batch,))."""
    if spec.dtype != column.dtype:
        raise _error(path, f"the model takes input {name!r} as {spec.dtype.name}, but the raw column is "
                           f"{column.dtype.name} (prep.raw_inputs() gives the raw columns' types)")
    if spec.shape.is_compatible_with(column.shape):
        return column
    rows, per_row = column.shape[0], int(np.prod(column.shape[1:]))
    dims = spec.shape.as_list()[1:] if spec.shape.rank else None
    if dims is not None and None not in dims and int(np.prod(dims)) == per_row:
        import tensorflow as tf
        return tf.reshape(column, [rows, *dims])
    raise _error(path, f"the model takes input {name!r} of shape {spec.shape.as_list() if spec.shape.rank else '?'}, "
                       f"but the raw column has {per_row} value(s) per row")


def _describe_outputs(loaded, result: Mapping[str, Any]) -> str:
    """What the model returns, as its `serve` endpoint (Keras's export) structures it
    when there is one: a single tensor is most likely an end-to-end model's predictions."""
    structure = None
    try:
        concrete = list(getattr(getattr(loaded, "serve", None), "concrete_functions", None) or [])
        if len(concrete) == 1:
            structure = concrete[0].structured_outputs
    except Exception:  # only a better description is lost
        pass
    if structure is not None and not isinstance(structure, (dict, list, tuple)):
        return "a single tensor (an end-to-end model's predictions?)"
    if isinstance(structure, (list, tuple)):
        return f"a list of {len(structure)} tensors"
    if all(re.fullmatch(r"output_\d+", key) for key in result):  # how signatures name unnamed outputs
        return f"unnamed outputs ({', '.join(sorted(result))}; an end-to-end model's predictions?)"
    return f"the outputs {', '.join(sorted(result))}"
