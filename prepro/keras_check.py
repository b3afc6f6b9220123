"""Checks a spec against Keras before the job runs: every feature must build its stock layer.

`prepro.spec` rejects what it can without Keras (fast, no TensorFlow import). Keras
refuses some configs only when the layer gets its state or is first called, which
without this check would surface after the whole job, as an artifact no layer can be
built from. `check_against_keras` builds each feature's layer the way
`prepro.load(...).layer()` builds it from an artifact (the same code,
`prepro.layers.Artifacts`, over an in-memory manifest holding what the job would write)
from a trivial state: one learned token of the right type in a vocabulary file, IDF
weights of 1, mean 0 and variance 1, boundaries at 0.0. It then calls the layer on one
trivial row, eagerly (as golden rows do), in a `tf.data` pipeline (as training does), on
symbolic `keras.Input`s (as a model is built) and, for the device layers, in a compiled
model's `predict`, through `prepro.training.Preprocessing`.

Importing this module imports neither Keras nor TensorFlow (about 5 s); calling
`check_against_keras` does. The job calls it through `prepro.verdict_cache.check`, which
keeps the verdict, so a spec already judged costs no TensorFlow import. Standalone
(always checks, never cached):

    python -m prepro.keras_check spec.yaml [more.yaml ...]
"""

import contextlib
import json
import logging
import os
import re
import sys
import tempfile
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from prepro import spec as spec_lib
from prepro.spec import FeatureSpec, Spec, SpecError

# Candidate learned tokens: the trivial vocabulary is the first that is neither the mask
# nor the OOV token (the job never puts those in a vocabulary).
_STRING_TOKENS = ("a", "b", "c")
_INTEGER_TOKENS = (1, 2, 3)
# The eager call materializes one row's output; above this many elements (a huge
# `num_tokens`, `max_tokens` with padding, `output_sequence_length` or `shape`) the layer
# is built and called symbolically only, so the check itself cannot exhaust memory.
MAX_EAGER_ELEMENTS = 1 << 22


def check_against_keras(spec: Spec, custom_objects: Optional[Mapping[str, Any]] = None) -> None:
    """Raises SpecError naming the first feature (in name order) whose config Keras
    refuses, with Keras's reason, and the other features it refuses.

    `custom_objects` maps a recorded callable name to the callable, as for
    `prepro.load`; "module:function" references not in it are imported, as the job
    imports them."""
    refused = refusals(spec, custom_objects)
    if refused:
        name, reason = next(iter(refused.items()))
        feature = spec.features[name]
        others = f" (Keras also refuses features {list(refused)[1:]})" if len(refused) > 1 else ""
        raise SpecError(f"feature '{name}': Keras refuses this {feature.layer} config "
                        f"{_config_text(feature)}: {reason}{others}")


def refusals(spec: Spec, custom_objects: Optional[Mapping[str, Any]] = None) -> Dict[str, str]:
    """{feature: Keras's reason} for every feature whose layer Keras refuses to build
    or call, in name order; empty if every layer works."""
    spec_lib.check_callables(spec)
    objects = {**spec_lib.custom_objects(spec), **dict(custom_objects or {})}
    refused = {}
    with tempfile.TemporaryDirectory(prefix="prepro-keras-check-") as root:
        for name, feature in sorted(spec.features.items()):
            try:  # one artifact per feature: Keras's reason is then this feature's own
                with _name_scopes_restored():
                    _build_and_call(trivial_artifacts(Spec({name: feature}), root, objects), name)
            except Exception as e:  # Keras raises ValueError, TypeError, RuntimeError, TF errors...
                refused[name] = keras_reason(e)
        compiled = [n for n, f in sorted(spec.features.items()) if n not in refused and _runs_compiled(f)]
        refused.update(_refusals_in_a_model(spec, compiled, root, objects))
    return dict(sorted(refused.items()))


def _runs_compiled(feature: FeatureSpec) -> bool:
    from prepro.training import DEVICE_LAYERS
    return feature.layer in DEVICE_LAYERS and _eager_elements(feature) <= MAX_EAGER_ELEMENTS


def _refusals_in_a_model(spec: Spec, names: List[str], root: str, objects) -> Dict[str, str]:
    """The device half as a compiled model runs it, in a traced graph (Keras 3.15's
    sparse multi_hot/count CategoryEncoding works eagerly but fails there). All the
    features in one model, so one trace; each alone only if that fails, so a reason is
    the feature's own."""
    groups = [names] if names else []
    refused: Dict[str, str] = {}
    with _tensorflow_warnings_off():  # one graph per feature when it splits: TF warns of retracing
        while groups:
            _try_group(spec, groups, refused, root, objects)
    return refused


def _try_group(spec: Spec, groups: List[List[str]], refused: Dict[str, str], root: str, objects) -> None:
    """Runs the next group of `groups`: a failing group of several is split into one per feature."""
    group = groups.pop()
    try:
        with _name_scopes_restored():
            _predict(trivial_artifacts(Spec({n: spec.features[n] for n in group}), root, objects), group)
    except Exception as e:  # as in refusals
        if len(group) == 1:
            refused[group[0]] = keras_reason(e)
        else:
            groups.extend([n] for n in group)


@contextlib.contextmanager
def _tensorflow_warnings_off():
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tf_logger.setLevel(level)


def _predict(trivial, names: List[str]) -> None:
    from prepro import golden
    dtypes: Dict[str, str] = {}
    row: Dict[str, Any] = {}
    for name in names:
        dtypes.update(_raw_dtypes(trivial.spec.features[name]))
    for name in names:
        row.update(trivial_row(trivial.spec.features[name], dtypes))
    import tensorflow as tf
    prep = trivial.preprocessing(names, raw_dtypes=dtypes)
    model = prep.preprocessing_model()
    tf.function(lambda raw: model(raw))(golden.raw_tensors(prep, [row]))  # a graph, as fit and predict trace


@contextlib.contextmanager
def _name_scopes_restored():
    """A layer call that fails inside Keras's name scope (e.g. a name TensorFlow refuses
    as a scope) leaves the scope on Keras's global stack, and every variable the caller
    creates afterwards is named under it. The check runs in the user's process (before
    `prepro.adapt`), so it puts the stack back. Keras has no public API for the stack."""
    from keras.src.backend.common import global_state
    stack = global_state.get_global_attribute("name_scope_stack", default=[], set_to_default=True)
    saved = list(stack)
    try:
        yield
    finally:
        stack[:] = saved


def _build_and_call(trivial, name: str) -> None:
    from prepro import golden
    feature = trivial.spec.features[name]
    if feature.is_inverse_lookup:  # not preprocessing: it takes indices, e.g. a model's output
        return _call_inverse(trivial.layer(name), spec_lib.token_start(feature))
    dtypes = _raw_dtypes(feature)
    prep = trivial.preprocessing([name], raw_dtypes=dtypes)   # builds the layer from the "artifact"
    if _eager_elements(feature) <= MAX_EAGER_ELEMENTS:
        rows = [trivial_row(feature, dtypes)]
        golden.feature_outputs(prep, rows)  # eager, on one row
        _in_tf_data(prep, golden.raw_tensors(prep, rows))
    prep.preprocessing_model()              # symbolic, as in a model


def _in_tf_data(prep, raw) -> None:
    """The host half in a tf.data pipeline, where the batch size is unknown while the
    graph is traced (Keras 3.15's sparse one_hot lookups fail only there)."""
    import tensorflow as tf
    for _ in tf.data.Dataset.from_tensor_slices(raw).batch(2).map(prep.host_fn):
        pass


def _call_inverse(layer, index: int) -> None:
    import keras
    layer(np.array([[index]], np.int64))
    layer(keras.Input((1,), dtype="int64"))


def trivial_artifacts(spec: Spec, root: str, custom_objects: Mapping[str, Any]):
    """A real artifact of `spec` with a trivial state, written under `root`: the state
    files the job writes and a manifest that passes `prepro.load`'s checks, so `layer()`
    sees what it would see after a job. `spec` is the given one (callables as objects),
    not re-parsed from the manifest."""
    from prepro import artifacts
    from prepro.layers import Artifacts
    files: Dict[str, Any] = {}

    def write(relpath: str, values) -> str:
        data = "".join(f"{v}\n" for v in values).encode("utf-8")
        os.makedirs(os.path.dirname(os.path.join(root, relpath)), exist_ok=True)
        with open(os.path.join(root, relpath), "wb") as f:
            f.write(data)
        files[relpath] = artifacts.file_entry(data)
        return relpath

    features = {name: {**feature.to_dict(), "state": _trivial_state(feature, write), "figures": _no_figures(feature)}
                for name, feature in sorted(spec.features.items())}
    manifest = {"format": artifacts.FORMAT, "format_version": 1, "spec": spec.to_dict(), "features": features,
                "files": files, "provenance": {"inputs": [], "input_format": "none", "rows_read": 0}}
    try:
        manifest = json.loads(json.dumps(manifest))
    except (TypeError, ValueError) as e:
        raise SpecError(f"the spec cannot be written into manifest.json (JSON): {e}") from None
    # Not validated: the spec may hold a config prepro's own rules refuse, whose Keras
    # reason is what is asked for (tests/test_spec_keras.py quotes Keras's words).
    trivial = Artifacts(root, manifest, custom_objects, _trusted=True)
    trivial.__dict__["spec"] = spec  # Artifacts.spec is a cached property
    return trivial


def trivial_vocabulary(feature: FeatureSpec) -> List[Any]:
    """One learned token of the feature's type that is neither its mask nor its OOV
    token; none for layers without a vocabulary."""
    if feature.is_numeric or feature.is_stateless:
        return []
    special = spec_lib.special_tokens(feature)
    candidates = _INTEGER_TOKENS if feature.is_integer else _STRING_TOKENS
    return [next(t for t in candidates if t not in special)]


def trivial_boundaries(feature: FeatureSpec) -> List[float]:
    """As many boundaries as the artifact would hold: num_bins - 1."""
    return [0.0] * max(0, int(feature.options["num_bins"]) - 1)


def kept_shape(feature: FeatureSpec) -> tuple:
    """Shape of a Normalization feature's mean and variance: the kept axes of (1, *shape)."""
    full = (1, *feature.element_shape)
    return tuple(full[a] for a in spec_lib.normalization_axes(feature))


def _trivial_state(feature: FeatureSpec, write) -> Dict[str, Any]:
    """The state the job would record, over trivial files written with `write`."""
    name = feature.name
    if feature.is_stateless:
        return {}
    if feature.layer == "Discretization":
        if feature.options["num_bins"] is None:
            return {"boundaries": "config"}
        boundaries = trivial_boundaries(feature)
        return {"boundaries_file": write(f"{name}/boundaries.txt", boundaries), "num_boundaries": len(boundaries),
                "distinct_boundaries": min(len(boundaries), 1), "quantiles": "exact", "rank_error_bound": 0.0}
    if feature.layer == "Normalization":
        shape = kept_shape(feature)
        size = int(np.prod(shape, dtype=np.int64))
        return {"mean_file": write(f"{name}/mean.txt", [0.0] * size),
                "variance_file": write(f"{name}/variance.txt", [1.0] * size), "shape": list(shape), "count": 1}
    tokens = trivial_vocabulary(feature)
    state = {"vocabulary_file": write(f"{name}/vocabulary.txt", tokens), "vocabulary_size": len(tokens),
             "documents": 1, "token_start": spec_lib.token_start(feature), "exceptions": []}
    if spec_lib.needs_document_frequencies(feature):
        state["document_frequencies_file"] = write(f"{name}/document_frequencies.txt", [1] * len(tokens))
    return state


def _no_figures(feature: FeatureSpec) -> Dict[str, Any]:
    counts = ["rows", "values", "missing"]
    if feature.is_numeric:
        return dict.fromkeys(counts + ["nan", "infinite", "zero_weight"], 0)
    counts += ["invalid_utf8_replaced", "invalid_utf8_skipped"]
    if feature.is_stateless:
        return dict.fromkeys(counts, 0)
    return {**dict.fromkeys(counts + ["documents", "tokens_seen", "special_tokens_seen", "distinct_tokens",
                                      "below_thresholds", "tokens_kept"], 0), "coverage": 0.0, "top_tokens": []}


def _raw_dtypes(feature: FeatureSpec) -> Dict[str, str]:
    """A Hashing column is taken as strings unless its mask_value is an integer (Keras
    compares the mask with the input, so the two must have one type)."""
    if feature.layer == "Hashing" and spec_lib._is_int(feature.options["mask_value"]):
        return {feature.source: "int64"}
    return {}


def trivial_row(feature: FeatureSpec, raw_dtypes: Mapping[str, str]) -> Dict[str, Any]:
    """One raw row: the learned token for lookups and text, 0 for CategoryEncoding and
    numbers (nested lists of zeros for a list column), "a" or 1 for Hashing."""
    if feature.is_numeric:
        value: Any = 0.0
        for d in reversed(feature.shape or ()):
            value = [value] * d
        return {column: value for column in feature.sources}
    if feature.layer == "CategoryEncoding":
        return {feature.source: 0}
    if feature.layer == "Hashing":
        return {feature.source: 1 if raw_dtypes.get(feature.source) == "int64" else "a"}
    return {feature.source: trivial_vocabulary(feature)[0]}


def _eager_elements(feature: FeatureSpec) -> int:
    """Elements of one row's input or output, whichever is larger (an upper bound)."""
    o = feature.options
    elements = 1
    for d in feature.element_shape:
        elements *= d
    mode = o.get("output_mode", "int")
    if feature.layer == "Normalization":
        width = 1
    elif mode == "int":
        width = o.get("output_sequence_length") or 1
    elif feature.layer == "Hashing":
        width = o["num_bins"]
    elif feature.layer == "CategoryEncoding":
        width = o["num_tokens"]
    elif feature.layer == "Discretization":
        width = 3
    else:
        width = o["max_tokens"] if o["pad_to_max_tokens"] and o["max_tokens"] else spec_lib.token_start(feature) + 1
    return max(elements, width if isinstance(width, int) else 1)


def _config_text(feature: FeatureSpec) -> str:
    return json.dumps(spec_lib._plain(dict(feature.config)), sort_keys=True, default=repr)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_KERAS_CALL_WRAPPER = re.compile(r"Exception encountered when calling [\w.]+\(\)\.\s*(.*?)\s*"
                                 r"(?:Arguments received by [\w.]+\(\):.*)?$", re.S)
_TRACED_CALL = re.compile(r"^\s*in user code:.*\n\s*\w+(?:Error|Exception): (.*?)\s*$", re.S)
_TF_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]( name: ?\S*)?")


def keras_reason(error: BaseException) -> str:
    """Keras's message on one line: without the "Exception encountered when calling"
    wrapper Keras puts around errors raised in call(), TensorFlow's op names, or colour."""
    from prepro.artifacts import ArtifactError
    if isinstance(error, ArtifactError) and error.__cause__ is not None:
        error = error.__cause__  # Keras's own error, which the artifact reader names its file for
    text = _ANSI.sub("", str(error))
    traced = _TRACED_CALL.search(text)
    if traced:  # an error raised while tracing a tf.function: its last line is the error
        text = traced.group(1)
    wrapped = _KERAS_CALL_WRAPPER.search(text)
    if wrapped:
        text = wrapped.group(1)
    text = " ".join(_TF_NODE.sub(" ", text).split())
    text = text or type(error).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def main(argv: Optional[List[str]] = None) -> int:
    import argparse
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m prepro.keras_check",
                                     description="Check that every feature of a spec builds and calls its "
                                                 "stock Keras layer, without running the job.")
    parser.add_argument("specs", nargs="+", metavar="SPEC.yaml")
    args = parser.parse_args(argv)
    status = 0
    for path in args.specs:
        try:
            spec = spec_lib.load_spec(path)
            check_against_keras(spec)
        except (ValueError, OSError) as e:  # SpecError is a ValueError
            print(f"{path}: error: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}: OK: {len(spec.features)} feature(s) build their Keras layers")
    return status


if __name__ == "__main__":
    sys.exit(main())
