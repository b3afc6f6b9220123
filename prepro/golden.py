"""Golden rows: raw input rows the artifacts carry with every feature's expected output,
so training/serving skew is caught in one command (`prepro verify`).

    golden/rows.json       the raw rows: [{column: value}], as the input held them
    golden/expected.json   {feature: {"dtype", "shape", "values"}}: the output of the
                           artifact-built layer (host and device halves) on those rows,
                           computed with Keras when the artifacts were made

`verify` recomputes the outputs with layers built from the artifacts here, with the
layers inside a saved `.keras` model (found by name), or with an exported model that
returns the features (`Preprocessing.preprocessing_model`), and compares them exactly.

Example:
>>> report = prepro.golden.verify(prepro.load("artifacts/"), model="serving.keras")
>>> report.ok, report.lines()
"""

import dataclasses
import json
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from prepro import artifacts as artifacts_lib, fs

ROWS_FILE, EXPECTED_FILE = "golden/rows.json", "golden/expected.json"


def record(root: str, manifest: Dict[str, Any], candidates: List[Dict[str, Any]], rows: int,
           custom_objects: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Writes the golden files next to the state files; returns the manifest with them.

    The first `rows` candidates that every layer accepts are kept (a layer may reject
    a real row: an out-of-vocabulary value with `num_oov_indices=0`)."""
    from prepro.layers import Artifacts
    prep = Artifacts(root, manifest, custom_objects).preprocessing()
    accepted, outputs, error = _accepted(prep, candidates, rows)
    if not accepted:
        return {**manifest, "golden": {"rows": 0, "why": f"no candidate row is accepted by every layer "
                                                         f"({len(candidates)} tried; last error: {error})"}}
    expected = {name: {"dtype": str(v.dtype), "shape": list(v.shape), "values": v.tolist()}
                for name, v in outputs.items()}
    files = dict(manifest["files"])
    for relpath, body in ((ROWS_FILE, accepted), (EXPECTED_FILE, expected)):
        data = (json.dumps(body, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        fs.write_bytes(fs.join(root, relpath), data)
        files[relpath] = artifacts_lib.file_entry(data)
    return {**manifest, "files": files, "golden": {"rows": len(accepted), "rows_file": ROWS_FILE,
                                                   "expected_file": EXPECTED_FILE}}


def _accepted(prep, candidates: List[Dict[str, Any]], rows: int):
    """The first `rows` candidates every layer accepts, their outputs, and the last
    rejection's message."""
    try:
        return candidates[:rows], feature_outputs(prep, candidates[:rows]), None
    except Exception:  # some row is rejected: find which, one row at a time
        pass
    accepted, error = [], None
    for row in candidates:
        try:
            feature_outputs(prep, [row])
        except Exception as e:
            error = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            continue
        accepted.append(row)
        if len(accepted) == rows:
            break
    return accepted, feature_outputs(prep, accepted) if accepted else None, error


def raw_tensors(prep, rows: List[Mapping[str, Any]]) -> Dict[str, Any]:
    """Golden rows as the raw-column tensors a model takes (`prep.raw_inputs()`)."""
    import tensorflow as tf
    out = {}
    for column, spec in prep.raw_inputs().items():
        values = [row[column] for row in rows]
        if spec.dtype == "string":
            values = np.array(values, dtype=object).astype(str)
        out[column] = tf.constant(np.asarray(values, dtype=None if spec.dtype == "string" else spec.dtype)
                                  .reshape((len(rows), *spec.shape[1:])))
    return out


def feature_outputs(prep, rows: List[Mapping[str, Any]], layers: Optional[Mapping[str, Any]] = None):
    """Each feature's output (host then device half) on `rows`, as NumPy arrays."""
    raw = raw_tensors(prep, rows)
    return {name: _numpy(v) for name, v in prep.device_outputs(prep.host_fn(raw, layers), layers).items()}


def _numpy(value) -> np.ndarray:
    if hasattr(value, "to_dense"):        # tf.SparseTensor (sparse=True outputs)
        import tensorflow as tf
        value = tf.sparse.to_dense(value)
    if hasattr(value, "to_list"):         # tf.RaggedTensor (ragged=True)
        return np.array(value.to_list(), dtype=object)
    return np.asarray(value)


@dataclasses.dataclass
class Report:
    """What `verify` found, per feature: None if equal, else the first difference."""
    checked: str
    rows: int
    differences: Dict[str, Optional[str]]

    @property
    def ok(self) -> bool:
        return all(d is None for d in self.differences.values())

    def lines(self) -> List[str]:
        out = [f"{self.checked}: {self.rows} golden rows"]
        for name, difference in sorted(self.differences.items()):
            out.append(f"  {name:<24} {'OK' if difference is None else 'DIFFERS: ' + difference}")
        return out


def verify(arts, model: Optional[str] = None) -> Report:
    """Checks layers built here from `arts` (no `model`), the same-named layers of a saved
    `.keras` model, or an exported SavedModel that returns the features, against the
    golden outputs."""
    if "golden" not in arts.manifest:
        raise ValueError(f"{arts.root} carries no golden rows (analyzed with --golden-rows 0)")
    rows = json.loads(fs.read_bytes(fs.join(arts.state_root, ROWS_FILE)))
    expected = json.loads(fs.read_bytes(fs.join(arts.state_root, EXPECTED_FILE)))
    prep = arts.preprocessing()
    if model is None:
        checked, got = "layers built from the artifacts", feature_outputs(prep, rows)
    elif model.endswith(".keras"):
        checked, got = model, _keras_model_outputs(prep, rows, model, arts.custom_objects)
    else:
        checked, got = model, _saved_model_outputs(prep, rows, model)
    return Report(checked, len(rows), {name: _difference(expected[name], got.get(name)) for name in expected})


def _keras_model_outputs(prep, rows, path: str, custom_objects) -> Dict[str, np.ndarray]:
    import keras
    loaded = keras.saving.load_model(path, custom_objects=custom_objects or None)
    found = {}
    for layer in _all_layers(loaded):
        found.setdefault(layer.name, layer)
    layers = {n: found.get(layer.name) for n, layer in prep.layers.items()}
    missing = sorted(n for n, layer in layers.items() if layer is None)
    outputs = feature_outputs(prep, rows, {n: layer for n, layer in layers.items() if layer is not None}) \
        if len(missing) < len(layers) else {}
    return {n: v for n, v in outputs.items() if n not in missing}


def _all_layers(model):
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


def _saved_model_outputs(prep, rows, path: str) -> Dict[str, np.ndarray]:
    import tensorflow as tf
    loaded = tf.saved_model.load(path)
    result = loaded.serve(raw_tensors(prep, rows))
    if not isinstance(result, Mapping):
        raise ValueError(f"{path}: its serve() returns {type(result).__name__}, not the features; export "
                         f"prep.preprocessing_model(), or verify the .keras model, whose layers are found by name")
    return {n: _numpy(v) for n, v in result.items()}


def _difference(expected: Mapping[str, Any], got: Optional[np.ndarray]) -> Optional[str]:
    if got is None:
        return "not found in the model (layers are matched by name)"
    want = np.array(expected["values"], dtype=expected["dtype"] if expected["dtype"] != "object" else object)
    if list(got.shape) != expected["shape"]:
        return f"shape {list(got.shape)}, expected {expected['shape']}"
    if str(got.dtype) != expected["dtype"]:
        return f"dtype {got.dtype}, expected {expected['dtype']}"
    if np.array_equal(got, want):
        return None
    bad = np.argwhere(got != want)[0]
    row = int(bad[0])
    detail = f"row {row}: got {got[row].tolist()}, expected {want[row].tolist()}"
    if np.issubdtype(want.dtype, np.floating):
        detail += f"; largest difference {float(np.max(np.abs(got.astype(np.float64) - want))):.3g}"
    return detail

