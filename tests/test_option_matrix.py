"""The option matrix: every Keras option of the seven layers, from artifacts, against
real adapt() (Hashing and CategoryEncoding have nothing to adapt: against the stock
layer with the same options).

For each layer, the options Keras 3.15 takes (and the kind of input column) are axes;
the cases are a pairwise covering of the combinations prepro's spec accepts: every pair
of option values that can occur together occurs in some case. Each case is one feature
of one real job over one file. For each case this test builds the stock layer, adapts it
on the same values, calls it eagerly and in tf.data on probes (unseen values, the mask,
out-of-range indices for inverse lookups), device layers also in a compiled model, and
requires:
- Keras refuses the case (construction, adapt or either call)  <=>  prepro refuses it
  before the job (`keras_check`), with Keras's words;
- otherwise the artifact-built layer gives the same vocabulary, IDF weights, and
  bit-identical outputs (dtype, shape, sparse/ragged); Normalization the same outputs;
  Discretization boundaries within their rank-error bound, and outputs equal to a
  Keras layer with those boundaries and the same options (adapt()'s own boundaries
  are less accurate: tests/test_numeric.py).
Combinations the spec refuses are checked to be refused by Keras too, unless the
refusal is one of prepro's own rules (listed below, each with its reason).
"""

import itertools
import json
import random

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines.analyze import run_analyze
import prepro
from prepro import keras_check
from prepro.training import HOST_LAYERS
from prepro import spec as spec_lib

ROWS = 60
STATELESS = ("Hashing", "CategoryEncoding")  # nothing to adapt: the stock layer with the same options
SPECIALS = {"StringLookup": ("", "[UNK]"), "IntegerLookup": (0, -1)}

AXES = {
    "StringLookup": {
        "input": ["scalar", "list"],
        "output_mode": list(spec_lib.LOOKUP_MODES),
        "num_oov_indices": [0, 1, 2],
        "mask_token": [None, ""],
        "oov_token": ["[UNK]", "?"],
        "max_tokens": [None, 6],
        "pad_to_max_tokens": [False, True],
        "sparse": [False, True],
        "invert": [False, True],
        "encoding": ["utf-8", "latin-1"],
    },
    "IntegerLookup": {
        "input": ["scalar", "list"],
        "output_mode": list(spec_lib.LOOKUP_MODES),
        "num_oov_indices": [0, 1, 2],
        "mask_token": [None, 0],
        "oov_token": [-1, 999],
        "max_tokens": [None, 6],
        "pad_to_max_tokens": [False, True],
        "sparse": [False, True],
        "invert": [False, True],
        "vocabulary_dtype": ["int64"],
    },
    "TextVectorization": {
        "input": ["scalar"],
        "output_mode": list(spec_lib.TEXT_MODES),
        "max_tokens": [None, 9],
        "standardize": ["lower_and_strip_punctuation", "lower", None],
        "split": ["whitespace", None, "character"],
        "ngrams": [None, 2, [1, 3]],
        "output_sequence_length": [None, 5],
        "pad_to_max_tokens": [False, True],
        "sparse": [False, True],
        "ragged": [False, True],
        "encoding": ["utf-8", "latin-1"],
    },
    "Normalization": {
        "input": ["scalar", "columns", "shaped"],
        "axis": [-1, None, [1, 2]],
        "invert": [False, True],
    },
    "Hashing": {
        "input": ["scalar", "list", "integer"],
        "num_bins": [1, 5],
        "mask_value": [None, "a"],
        "salt": [None, 7],
        "output_mode": ["int", "one_hot", "multi_hot", "count"],
        "sparse": [False, True],
    },
    "CategoryEncoding": {
        "input": ["scalar", "list"],
        "num_tokens": [3, 8],
        "output_mode": ["one_hot", "multi_hot", "count"],
        "sparse": [False, True],
    },
    "Discretization": {
        "input": ["scalar", "shaped"],
        "num_bins": [1, 4],
        "output_mode": ["int", "one_hot", "multi_hot", "count"],
        "sparse": [False, True],
        "epsilon": [0.01, 0.001],
        "dtype": [None, "int32", "float32"],
    },
}

# Spec refusals that are prepro's own rules, not Keras's (Keras accepts these).
PREPRO_RULES = {
    "leaves no room for tokens": "max_tokens not above the reserved indices: Keras builds a layer with no "
                                 "learned token, which adapt() cannot fill (see docs/keras-parity.md)",
}


def _columns():
    """Deterministic small data: every column the cases read."""
    rng = random.Random(14)
    words = ["alpha", "Beta", "gamma,", "delta.", "ALPHA", "éclair", "beta", "zeta!", "eta", "theta"]
    tokens = ["a", "b", "c", "d", "e", "f", "g", "", "[UNK]", "?", "é"]
    codes = [1, 2, 3, 4, 5, 6, 7, 0, -1, 999]
    pick = lambda seq: seq[min(int(rng.expovariate(0.5)), len(seq) - 1)]  # noqa: E731 (skewed counts)
    rows = []
    for i in range(ROWS):
        rows.append({
            "text": " ".join(pick(words) for _ in range(rng.randint(0, 6))),
            "token": pick(tokens), "tokens": [pick(tokens) for _ in range(rng.randint(0, 3))],
            "code": pick(codes), "codes": [pick(codes) for _ in range(rng.randint(0, 3))],
            "small": rng.randint(0, 2), "smalls": [rng.randint(0, 2) for _ in range(rng.randint(0, 3))],
            "x": rng.gauss(3, 2), "y": rng.uniform(-1, 1),
            "vec": [rng.gauss(i % 3, 1) for _ in range(6)],  # shape [2, 3], flat as a list column
        })
    return rows


def _source(layer, kind):
    if layer == "TextVectorization":
        return {"source": "text"}
    if layer == "Hashing":
        return {"source": {"scalar": "token", "list": "tokens", "integer": "code"}[kind]}
    if layer == "CategoryEncoding":
        return {"source": "small" + ("s" if kind == "list" else "")}
    if layer in SPECIALS:
        column = "token" if layer == "StringLookup" else "code"
        return {"source": column + ("s" if kind == "list" else "")}
    return {"scalar": {"source": "x"}, "columns": {"source": ["x", "y"]},
            "shaped": {"source": "vec", "shape": [2, 3]}}[kind]


def _entry(layer, case):
    config = {k: v for k, v in case.items() if k != "input"}
    if layer == "Discretization" and config.get("dtype") is None:
        config.pop("dtype", None)
    return {**_source(layer, case["input"]), "layer": layer, "config": config}


def _accepted_by_spec(layer, case):
    try:
        spec_lib.spec_from_dict({"features": {"f": _entry(layer, case)}})
        return None
    except spec_lib.SpecError as e:
        return str(e)


def _pairs(case):
    items = sorted((k, json.dumps(v)) for k, v in case.items())
    return set(itertools.combinations(items, 2))


def pairwise(layer):
    """A greedy pairwise covering of the spec-accepted combinations, and the refused ones.

    Written here (a few lines) rather than taken from a library: the covering must
    range over the *accepted* combinations only, which the common all-pairs tools
    take as a filter callback over partial rows; the full products here are small."""
    axes = AXES[layer]
    accepted, refused = [], {}
    for values in itertools.product(*axes.values()):
        case = dict(zip(axes, values))
        reason = _accepted_by_spec(layer, case)
        if reason is None:
            accepted.append(case)
        else:
            refused.setdefault(_message_kind(reason), case)
    pairs = [_pairs(c) for c in accepted]
    uncovered = set().union(*pairs)
    chosen = []
    while uncovered:
        best = max(range(len(accepted)), key=lambda i: len(pairs[i] & uncovered))
        chosen.append(accepted[best])
        uncovered -= pairs[best]
    return chosen, refused


def _message_kind(reason):
    """A refusal's kind: its message without the feature name and the values."""
    return reason.split(": ", 2)[-1].split(" got ")[0].split(" (Keras")[0][:80]


CASES = {layer: pairwise(layer) for layer in AXES}


def _reference_input(layer, kind, rows):
    """The column as a Keras user would pass it to adapt(): a 1-D NumPy array of a
    scalar column (adapt() makes each value a one-token document), a ragged tensor of a
    list column (a row is a document), stacked or shaped float arrays."""
    column = _source(layer, kind)["source"]
    if layer in ("Normalization", "Discretization"):
        # float64, as the job reads JSON numbers: adapt() on a NumPy array computes in the
        # array's dtype (keras-parity.md 19), which prepro's float64 moments reproduce.
        if kind == "columns":
            return np.array([[r["x"], r["y"]] for r in rows], np.float64)
        if kind == "shaped":
            return np.array([r["vec"] for r in rows], np.float64).reshape(-1, 2, 3)
        return np.array([[r["x"]] for r in rows], np.float64)
    values = [r[column] for r in rows]
    if kind == "list":
        return tf.ragged.constant(values, dtype=tf.string if layer != "IntegerLookup" else tf.int64)
    return np.array(values, dtype=object if layer != "IntegerLookup" else np.int64)


def _probe(layer, case, rows, unseen=True):
    """Values to call the layers on. `unseen=False`: only values of the data (a layer
    with num_oov_indices=0 rejects any other, in Keras and from artifacts alike)."""
    kind = case["input"]
    if case.get("invert") and layer in SPECIALS:
        return np.array([[0], [1], [2], [3], [4], [40], [-1]], np.int64)
    if layer == "TextVectorization":
        return np.array([["alpha beta"], ["Gamma unseen words here"], [""], ["éclair zeta! eta"]], dtype=object)
    if layer == "StringLookup":
        values = ["a", "zz", "", "é", "[UNK]"] if unseen else ["a", "b", "c", "a", "b"]
        return tf.ragged.constant([values[:2], [], values[2:]]) if kind == "list" \
            else np.array([[v] for v in values], dtype=object)
    if layer == "IntegerLookup":
        values = [1, 55, 0, 7, -1] if unseen else [1, 2, 3, 1, 2]
        return tf.ragged.constant([values[:2], [], values[2:]], dtype=tf.int64) if kind == "list" \
            else np.array([[v] for v in values], np.int64)
    if layer == "Hashing":
        return {"scalar": np.array([["a"], ["b"], ["zz"], [""]], dtype=object),
                "list": tf.ragged.constant([["a", "b"], [], ["zz"]]),
                "integer": np.array([[1], [7], [55], [0]], np.int64)}[kind]
    if layer == "CategoryEncoding":  # a list column as Keras takes it: (batch, k) indices
        return np.array([[0, 1], [1, 1], [2, 0]], np.int64) if kind == "list" else np.array([[0], [1], [2]], np.int64)
    data = _reference_input(layer, kind, rows)
    return np.concatenate([data[:5], data[:1] * 10, data[:1] * -10])


def _keras_layer(layer, case):
    config = _entry(layer, case)["config"]
    if isinstance(config.get("ngrams"), list):
        config["ngrams"] = tuple(config["ngrams"])
    if isinstance(config.get("axis"), list):
        config["axis"] = tuple(config["axis"])
    return getattr(keras.layers, layer)(**config)


def _dense(value):
    if isinstance(value, tf.SparseTensor):
        return ("sparse", tf.sparse.to_dense(value).numpy())
    if isinstance(value, tf.RaggedTensor):
        return ("ragged", value.to_list())
    return ("dense", np.asarray(value))


def _outputs(built, probe):
    """The layer's output eagerly, and in tf.data (batches of 2) as comparable values or
    the reason it fails there (Keras 3.15's sparse one_hot/count Discretization fails in
    tf.data but works in a model, where prepro puts it)."""
    eager = _dense(built(probe))
    try:
        batches = [_dense(b) for b in tf.data.Dataset.from_tensor_slices(probe).batch(2).map(built)]
    except Exception as e:  # whatever TF raises while tracing the map
        batches = keras_check.keras_reason(e)
    return eager, batches


def _assert_same(got, want, what):
    (kind_a, a), (kind_b, b) = got, want
    assert kind_a == kind_b, f"{what}: {kind_a} vs {kind_b}"
    if kind_a == "ragged":
        assert a == b, what
        return
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    np.testing.assert_array_equal(a, b, err_msg=what)


def _known_only(case):
    """A forward lookup with no OOV index: Keras rejects any value outside the vocabulary."""
    return case.get("num_oov_indices") == 0 and not case.get("invert")


def _reference(layer, case, rows):
    """The adapted Keras layer and its outputs on the probe, or Keras's refusal."""
    try:
        reference = _keras_layer(layer, case)
        if layer not in STATELESS:
            reference.adapt(_reference_input(layer, case["input"], rows))
        probe = _probe(layer, case, rows, unseen=not _known_only(case))
        outputs = _outputs(reference, probe)
        if layer not in HOST_LAYERS:  # a device layer runs in the user's compiled model
            inputs = keras.Input(probe.shape[1:], dtype=probe.dtype.name)
            keras.Model(inputs, reference(inputs)).predict(probe, verbose=0)
    except Exception as e:  # whatever Keras raises (ValueError, TypeError, TF errors)
        return None, None, keras_check.keras_reason(e)
    if isinstance(outputs[1], str) and layer in HOST_LAYERS:
        return None, None, outputs[1]  # a host layer runs in tf.data: failing there is a refusal
    return reference, outputs, None


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """Every case's reference, and one real job over the cases Keras accepts."""
    rows = _columns()
    d = tmp_path_factory.mktemp("matrix")
    path = d / "rows.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    cases, features = {}, {}
    for layer, (chosen, _) in CASES.items():
        for i, case in enumerate(chosen):
            name = f"{layer}_{i:02d}"
            cases[name] = (layer, case, *_reference(layer, case, rows))
            if cases[name][4] is None:
                features[name] = _entry(layer, case)
    spec = spec_lib.spec_from_dict({"features": features})
    run_analyze(spec, [str(path)], "jsonl", str(d / "out"))
    return {"rows": rows, "cases": cases, "arts": prepro.load(str(d / "out"))}


def test_the_matrix_covers_every_layer_and_mode():
    for layer, (chosen, _) in CASES.items():
        for axis, values in AXES[layer].items():
            covered = {json.dumps(c[axis]) for c in chosen}
            assert covered == {json.dumps(v) for v in values}, (layer, axis)
    print({layer: len(chosen) for layer, (chosen, _) in CASES.items()})


CASE_IDS = [f"{layer}_{i:02d}" for layer, (chosen, _) in CASES.items() for i in range(len(chosen))]


@pytest.mark.parametrize("name", CASE_IDS)
def test_case_against_adapt(matrix, name):
    layer, case, reference, want, keras_refusal = matrix["cases"][name]
    if keras_refusal is not None:
        # Keras refuses it: prepro must refuse it before any job, with Keras's words.
        spec = spec_lib.spec_from_dict({"features": {"f": _entry(layer, case)}})
        refused = keras_check.refusals(spec)
        assert "f" in refused, f"{case}: Keras refuses ({keras_refusal}) but prepro's check accepts it"
        assert _gist(keras_refusal) in refused["f"], (refused["f"], keras_refusal)
        return
    arts, rows = matrix["arts"], matrix["rows"]
    built = arts.layer(name)
    got = _outputs(built, _probe(layer, case, rows, unseen=not _known_only(case)))
    if _known_only(case):
        _assert_same_refusal(built, reference, _probe(layer, case, rows))
    if layer == "Discretization":
        return _check_discretization(arts, name, case, rows, got, want)
    _assert_same_outputs(got, want, f"{name} {case}")
    if layer in ("StringLookup", "IntegerLookup", "TextVectorization"):
        assert built.get_vocabulary() == reference.get_vocabulary(), name
        assert built.vocabulary_size() == reference.vocabulary_size(), name
        if case["output_mode"] == "tf_idf":
            np.testing.assert_array_equal(_idf(built), _idf(reference))


def _assert_same_outputs(got, want, what):
    _assert_same(got[0], want[0], f"{what} eager")
    if isinstance(want[1], str):
        assert got[1] == want[1], f"{what}: in tf.data Keras's layer fails ({want[1]}), this one: {got[1]}"
        return
    assert len(got[1]) == len(want[1]), what
    for i, (a, b) in enumerate(zip(got[1], want[1])):
        _assert_same(a, b, f"{what} tf.data batch {i}")


def _assert_same_refusal(built, reference, probe):
    """With no OOV index, an unseen value is an error in Keras; from artifacts too."""
    errors = []
    for layer in (built, reference):
        with pytest.raises(Exception) as e:  # TF's InvalidArgumentError, as Keras raises it
            layer(probe)
        errors.append(keras_check.keras_reason(e.value))
    assert "should be in vocabulary" in errors[1] and errors[0] == errors[1], errors


def _gist(reason):
    return reason[:60]


def _idf(layer):
    lookup = getattr(layer, "_lookup_layer", layer)
    return np.asarray(lookup.idf_weights_const)


def _check_discretization(arts, name, case, rows, got, want):
    """Boundaries within the artifact's bound (the documented tolerance), and the same
    outputs as Keras's layer given those boundaries and the same options; the output
    kind, dtype and shape equal the adapted layer's."""
    data = _reference_input("Discretization", case["input"], rows).reshape(-1)
    boundaries = arts.bin_boundaries(name)
    bound = arts.manifest["features"][name]["state"]["rank_error_bound"]
    for q, b in zip(np.arange(1, case["num_bins"]) / case["num_bins"], boundaries):
        rank = (np.sum(data < b) + np.sum(data <= b)) / 2 / len(data)
        assert abs(rank - q) <= bound + 1 / len(data), (name, q, b)
    config = {k: v for k, v in _entry("Discretization", case)["config"].items() if k != "num_bins"}
    same = keras.layers.Discretization(bin_boundaries=boundaries, **config)
    expected = _outputs(same, _probe("Discretization", case, rows))
    _assert_same_outputs(got, expected, name)
    assert (got[0][0], got[0][1].dtype, got[0][1].shape) == (want[0][0], want[0][1].dtype, want[0][1].shape)


REFUSED = [(layer, kind, case) for layer, (_, refused) in CASES.items() for kind, case in sorted(refused.items())]


@pytest.mark.parametrize("layer, kind, case", REFUSED, ids=[f"{r[0]}-{r[1][:40]}" for r in REFUSED])
def test_spec_refusals_are_keras_refusals(layer, kind, case):
    """A combination the spec refuses is one Keras refuses too (at construction, adapt or
    call), or one of prepro's own documented rules."""
    if any(words in kind for words in PREPRO_RULES):
        return
    rows = _columns()
    _, _, keras_refusal = _reference(layer, case, rows)
    assert keras_refusal is not None, f"prepro refuses {case} ({kind}) but Keras accepts it"
