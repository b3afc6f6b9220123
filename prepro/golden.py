"""Golden rows: raw input rows the artifacts carry with every feature's expected output,
so training/serving skew is caught in one command (`prepro verify`).

    golden/rows.json       the raw rows: [{column: value}], as the input held them
    golden/expected.json   {feature: {"dtype", "shape", "values"}}: the output of the
                           artifact-built layer (host and device halves) on those rows,
                           computed when the artifacts were made: by `prepro.golden_numpy`
                           (no TensorFlow) where it covers every feature, else with Keras

`verify` recomputes the outputs with layers built from the artifacts here, with the
layers inside a saved `.keras` model (found by name), or with the outputs named like
features of an exported SavedModel (`Preprocessing.preprocessing_model`), and compares
them exactly; a model may cover some of the features (`prepro.model_outputs`).

Example:
>>> report = prepro.golden.verify(prepro.load("artifacts/"), model="serving.keras")
>>> report.ok, report.lines()
"""

import dataclasses
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from prepro import artifacts as artifacts_lib, fs, model_outputs

ROWS_FILE, EXPECTED_FILE = "golden/rows.json", "golden/expected.json"


def record(root: str, manifest: Dict[str, Any], candidates: List[Dict[str, Any]], rows: int,
           custom_objects: Optional[Mapping[str, Any]] = None, evaluator: bool = True) -> Dict[str, Any]:
    """Writes the golden files next to the state files; returns the manifest with them.

    The first `rows` candidates that every layer accepts are kept (a layer may reject
    a real row: an out-of-vocabulary value with `num_oov_indices=0`). Their outputs come
    from `prepro.golden_numpy` (no TensorFlow) where it covers every feature, else
    (or with `evaluator=False`) from the Keras layers built from the artifacts; the two
    give the same files (tests/test_golden_numpy.py)."""
    from prepro.layers import Artifacts
    found = None
    if evaluator:
        from prepro import golden_numpy
        arts = Artifacts(root, manifest, custom_objects)
        try:
            found = _accepted(lambda r: golden_numpy.feature_outputs(arts, r), candidates, rows,
                              passes=golden_numpy.NotCovered)
            if not found[0]:  # the reason wanted is Keras's rejection message
                found = None
        except golden_numpy.NotCovered:
            found = None
    if found is None:
        prep = Artifacts(root, manifest, custom_objects).preprocessing()
        found = _accepted(lambda r: feature_outputs(prep, r), candidates, rows)
    accepted, outputs, error = found
    if not accepted:
        return {**manifest, "golden": {"rows": 0, "why": f"no candidate row is accepted by every layer "
                                                         f"({len(candidates)} tried; last error: {error})"}}
    expected = {name: {"dtype": str(v.dtype), "shape": list(v.shape), "values": v.tolist()}
                for name, v in outputs.items()}
    files = dict(manifest["files"])
    for relpath, body in ((ROWS_FILE, accepted), (EXPECTED_FILE, expected)):
        data = (json.dumps(body, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        fs.write_bytes(fs.join(artifacts_lib.state_root(root, manifest), relpath), data)
        files[relpath] = artifacts_lib.file_entry(data)
    return {**manifest, "files": files, "golden": {"rows": len(accepted), "rows_file": ROWS_FILE,
                                                   "expected_file": EXPECTED_FILE}}


def _accepted(outputs, candidates: List[Dict[str, Any]], rows: int, passes=()):
    """The first `rows` candidates every layer accepts, their outputs (`outputs(rows)`),
    and the last rejection's message. `passes`: exceptions that are not rejections."""
    try:
        return candidates[:rows], outputs(candidates[:rows]), None
    except passes:
        raise
    except Exception:  # some row is rejected: find which, one row at a time
        pass
    accepted, error = [], None
    for row in candidates:
        try:
            outputs([row])
        except passes:
            raise
        except Exception as e:
            error = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
            continue
        accepted.append(row)
        if len(accepted) == rows:
            break
    return accepted, outputs(accepted) if accepted else None, error


def raw_arrays(layout: Mapping[str, Any], rows: List[Mapping[str, Any]]) -> Dict[str, np.ndarray]:
    """Golden rows as NumPy arrays, one per column of `layout` ({column: (dtype name,
    one row's shape)}): what `raw_tensors` hands TensorFlow (and `prepro.golden_numpy`
    computes on). Strings go through NumPy's str dtype, as tf.constant gets them. A list
    value keeps its length: a lookup's list column needs no declared shape here."""
    out = {}
    for column, (dtype, row_shape) in layout.items():
        values = [row[column] for row in rows]
        if dtype == "string":
            values = np.array(values, dtype=object).astype(str)
        with np.errstate(over="ignore"):  # 1e300 into float32 is inf, as tf.constant makes it
            array = np.asarray(values, dtype=None if dtype == "string" else dtype)
        if array.size == len(rows) * int(np.prod(row_shape)):  # a scalar or a flat list of a declared shape
            array = array.reshape((len(rows), *row_shape))
        out[column] = array
    return out


def raw_tensors(prep, rows: List[Mapping[str, Any]]) -> Dict[str, Any]:
    """Golden rows as the raw-column tensors a model takes (`prep.raw_specs()`)."""
    import tensorflow as tf
    layout = {column: (spec.dtype.name, tuple(spec.shape[1:])) for column, spec in prep.raw_specs().items()}
    return {column: tf.constant(array) for column, array in raw_arrays(layout, rows).items()}


def feature_outputs(prep, rows: List[Mapping[str, Any]], layers: Optional[Mapping[str, Any]] = None):
    """Each feature's output (host then device half) on `rows`, as NumPy arrays."""
    raw = raw_tensors(prep, rows)
    return {name: model_outputs.to_numpy(v) for name, v in prep.device_outputs(prep.host_fn(raw, layers), layers).items()}


@dataclasses.dataclass
class Report:
    """What `verify` found. `differences`: per checked feature, None if equal, else the
    first difference. `absent`: features the model does not compute (not checked);
    a failure only for those in `required` (the features the caller named)."""
    checked: str
    rows: int
    differences: Dict[str, Optional[str]]
    absent: List[str] = dataclasses.field(default_factory=list)
    required: List[str] = dataclasses.field(default_factory=list)

    @property
    def missing(self) -> List[str]:
        """Named features the model does not compute."""
        return sorted(set(self.absent) & set(self.required))

    @property
    def ok(self) -> bool:
        return all(d is None for d in self.differences.values()) and not self.missing

    def lines(self) -> List[str]:
        out = [f"{self.checked}: {self.rows} golden rows"]
        for name in sorted([*self.differences, *self.absent]):
            if name in self.differences:
                difference = self.differences[name]
                status = "OK" if difference is None else "DIFFERS: " + difference
            else:
                status = "MISSING: not in the model" if name in self.required else "not in the model (not checked)"
            out.append(f"  {name:<24} {status}")
        return out


def verify(arts, model: Optional[str] = None, features: Optional[Sequence[str]] = None,
           max_ulps: int = 0) -> Report:
    """Checks layers built here from `arts` (no `model`), the same-named layers of a saved
    Keras model, or the same-named outputs of a SavedModel's serving signature, against
    the golden outputs (see `prepro.model_outputs`). `features`: check only these (each
    must then be in the model). Golden files are read as the manifest lists them and
    checked (`read_golden`); a model that cannot be checked is a one-line
    `model_outputs.ModelError`; features it lacks are `absent`, a feature it fails on
    is reported as a difference. `max_ulps`: how many units in the last place a float
    output may differ (0: bit for bit); a model compiled by XLA under JAX rounds
    Normalization's division differently from TensorFlow by 1."""
    rows, expected = read_golden(arts)
    wanted = _wanted(arts, expected, features)
    prep = arts.preprocessing()
    raw = _golden_inputs(arts, prep, rows)
    if model is None:
        checked, got = "layers built from the artifacts", model_outputs.layer_outputs(prep, raw, prep.layers)
    else:
        checked, got = model_outputs.model_outputs(prep, raw, model, arts.custom_objects)
    return Report(checked, len(rows), {name: _difference(expected[name], got[name], max_ulps)
                                       for name in wanted if name in got},
                  absent=[name for name in wanted if name not in got], required=list(features or []))


def golden_features(arts) -> List[str]:
    """The features golden rows have outputs for: all but inverse lookups (invert=True),
    which map a model's output indices back to tokens and take no raw column."""
    return [n for n in arts.features if not arts.spec.features[n].is_inverse_lookup]


def _wanted(arts, expected: Mapping[str, Any], features: Optional[Sequence[str]]) -> List[str]:
    """The features to check: all, or those named (each one a feature)."""
    if features is None:
        return sorted(expected)
    inverse = [name for name in features if name in arts.features and name not in expected]
    if inverse:
        raise ValueError(f"{', '.join(map(repr, inverse))}: inverse lookups (invert=True) take a model's output, "
                         f"not raw columns, so golden rows do not check them")
    unknown = [name for name in features if name not in expected]
    if unknown or not features:
        raise ValueError(artifacts_lib.one_line(
            f"no feature {', '.join(map(repr, unknown)) or 'named'} in {arts.root}; its features: "
            f"{', '.join(sorted(expected))}"))
    return sorted(set(features))


# Structure of the golden files; their bytes are checked against the manifest first.
_VALUE = {"type": ["null", "boolean", "number", "string", "array"]}
ROWS_SCHEMA = {"type": "array", "minItems": 1,
               "items": {"type": "object", "additionalProperties": _VALUE}}
_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
           "float16", "float32", "float64", "object"]
EXPECTED_SCHEMA = {"type": "object", "additionalProperties": {
    "type": "object", "required": ["dtype", "shape", "values"], "additionalProperties": False,
    "properties": {"dtype": {"enum": _DTYPES}, "values": _VALUE,
                   "shape": {"type": "array", "maxItems": 32,
                             "items": {"type": "integer", "minimum": 0, "maximum": artifacts_lib.MAX_INDEX}}}}}


def read_golden(arts):
    """(rows, {feature: expected output array}) from the files the manifest's `golden`
    names, read through `arts.files` (listed, confined, size and SHA-256 checked) and
    checked for structure; a ValueError if the artifact carries no golden rows."""
    golden = arts.manifest.get("golden")
    if golden is None:
        raise ValueError(f"{arts.root} carries no golden rows (analyzed with --golden-rows 0)")
    if golden["rows"] == 0:
        raise ValueError(artifacts_lib.one_line(f"{arts.root} carries no golden rows: {golden['why']}"))
    rows = _golden_json(arts, golden["rows_file"], ROWS_SCHEMA)
    expected = _golden_json(arts, golden["expected_file"], EXPECTED_SCHEMA)
    if len(rows) != golden["rows"]:
        raise artifacts_lib.ArtifactError(f"{golden['rows_file']}: {len(rows)} rows, the manifest says "
                                          f"{golden['rows']}")
    if set(expected) != set(golden_features(arts)):
        raise artifacts_lib.ArtifactError(artifacts_lib.one_line(
            f"{golden['expected_file']}: outputs of {sorted(expected)}, but the features with golden outputs "
            f"are {golden_features(arts)}"))
    return rows, {name: _expected_array(golden["expected_file"], name, entry, len(rows))
                  for name, entry in expected.items()}


def _golden_json(arts, relpath: str, schema: Dict[str, Any]):
    where = fs.join(arts.state_root, relpath)
    value = artifacts_lib.parse_json(arts.files.read(relpath), where)
    artifacts_lib.check_schema(value, schema, where)
    return value


def _expected_array(relpath: str, name: str, entry: Mapping[str, Any], rows: int) -> np.ndarray:
    try:
        if entry["dtype"] == "object":  # ragged outputs: one list per row
            want = np.empty(len(entry["values"]), dtype=object)
            for i, value in enumerate(entry["values"]):
                want[i] = value
        else:
            want = np.array(entry["values"], dtype=entry["dtype"])
    except (ValueError, TypeError, OverflowError) as e:
        raise artifacts_lib.ArtifactError(artifacts_lib.one_line(
            f"{relpath}: {name}: values do not fit dtype {entry['dtype']}: {e}", 600)) from None
    if list(want.shape) != entry["shape"] or not want.shape or want.shape[0] != rows:
        raise artifacts_lib.ArtifactError(f"{relpath}: {name}: values of shape {list(want.shape)}, recorded "
                                          f"{entry['shape']} for {rows} rows")
    return want


def _golden_inputs(arts, prep, rows):
    try:
        return raw_tensors(prep, rows)
    except Exception as e:  # rows are data from the artifact: any failure is the artifact's
        raise artifacts_lib.ArtifactError(artifacts_lib.one_line(
            f"{arts.manifest['golden']['rows_file']}: the golden rows do not fit the features' raw inputs: "
            f"{type(e).__name__}: {model_outputs.first_line(e)}", 600)) from e


def _difference(want: np.ndarray, got, max_ulps: int = 0) -> Optional[str]:
    if isinstance(got, str):
        return got
    if got.shape != want.shape:
        return f"shape {list(got.shape)}, expected {list(want.shape)}"
    if got.dtype != want.dtype:
        return f"dtype {got.dtype}, expected {want.dtype}"
    if np.array_equal(got, want):
        return None
    close = got == want
    if max_ulps and np.issubdtype(want.dtype, np.floating):
        close = np.abs(got - want) <= max_ulps * np.spacing(np.abs(want))  # spacing: one ulp, in want's dtype
        if close.all():
            return None
    bad = np.argwhere(~close)[0]
    row = int(bad[0])
    detail = f"row {row}: got {got[row].tolist()}, expected {want[row].tolist()}"
    if np.issubdtype(want.dtype, np.floating):
        detail += f"; largest difference {float(np.max(np.abs(got.astype(np.float64) - want))):.3g}"
    return detail
