"""Fuzzing the spec parser (item 6): whatever a YAML or JSON spec holds, `spec_from_dict`
and `load_spec` raise SpecError or return a spec that round-trips, whose feature names
are safe path components.

Bounded by the "ci" hypothesis profile (tests/conftest.py); `PREPRO_FUZZ=long` searches
longer. Crashes found are the named regression tests at the end of this file.
"""

import datetime
import json
import math

import yaml
from hypothesis import event, given, settings, strategies as st

from prepro import spec as spec_lib
from prepro.spec import SpecError

OPTION_NAMES = sorted({k for options in spec_lib.LAYER_DEFAULTS.values() for k in options}
                      | set(spec_lib.BASE_LAYER_OPTIONS) | set(spec_lib.STATE_OPTIONS) | {"epsilon"})
ENTRY_KEYS = ["source", "layer", "config", "invalid_utf8", *spec_lib.THRESHOLDS, *spec_lib.NUMERIC_KEYS]
LAYERS = sorted(spec_lib.LAYER_DEFAULTS)

# Scalars YAML can produce (safe_load: null, bool, int, float, str, bytes, dates).
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-3, max_value=40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.binary(max_size=6),
    st.dates(), st.sampled_from(["int", "one_hot", "multi_hot", "count", "tf_idf", "binary", "utf-8", "", "[UNK]",
                                 "whitespace", "lower", "sketch", "exact", "error", "skip", "x:y", "farmhash",
                                 "int64", "float32", "golden", "../x"]))
keys = st.one_of(st.text(max_size=8), st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False),
                 st.sampled_from(ENTRY_KEYS + OPTION_NAMES + ["features"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                      max_leaves=12)


safe_names = st.from_regex(spec_lib.FEATURE_NAME_PATTERN, fullmatch=True)
unsafe_names = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["../../x", "/abs", "a/b", "..", ".", "golden", "GOLDEN", "a b", "a\n", "\u2028", "x" * 101,
                     "C:\\x", "~", "$HOME", "*", "-x", "_x", ".x"]),
    st.integers(), st.none(), st.booleans(), st.dates())


def mostly(common, rare, in_ten=8):
    """`common` in `in_ten` draws of ten, else `rare` (hypothesis's one_of merges equal branches)."""
    return st.integers(0, 9).flatmap(lambda i: common if i < in_ten else rare)


# Mostly safe names, so that many generated specs get past the names to their options.
feature_names = mostly(safe_names, unsafe_names, 9)

NAN = float("nan")
# Per option: (valid values, values just outside or of the wrong type). Drawing mostly
# valid ones makes a good share of the generated specs accepted, so the round trip is
# exercised; `values` adds anything YAML can hold.
OPTION_VALUES = {
    "max_tokens": ([None, 3, 10, 20000], [1, 2, 0, -1, 2.5, True, 2 ** 70]),
    "num_oov_indices": ([0, 1, 2], [-1, 1.5, False]),
    "mask_token": ([None, "", "[MASK]"], [0, -1, 2 ** 64, "a"]),
    "oov_token": ([None, "[UNK]"], ["", -1, 7, 1.5]),
    "output_mode": (["int", "multi_hot", "count"], ["one_hot", "tf_idf", "binary", "tf-idf", "xyz", None]),
    "standardize": ([None, "lower", "strip_punctuation", "lower_and_strip_punctuation", "a:b"], ["upper", ":"]),
    "split": ([None, "whitespace", "character"], ["comma", "m:f"]),
    "ngrams": ([None, 1, 2, [1, 2]], [[0], [], 0, True, 2.0]),
    "output_sequence_length": ([None, 0, 4], [-1, 2.5]),
    "pad_to_max_tokens": ([False], [True, "yes"]), "sparse": ([False], [True, "no"]),
    "ragged": ([False, True], [1]), "invert": ([False], [True]),
    "encoding": (["utf-8", "UTF8", "utf_8"], ["latin-1", 3, None]),
    "name": ([None, "n", ""], ["a/b", 3]), "dtype": ([None], ["float32", "int32", "string", "foo", 3]),
    "vocabulary_dtype": (["int64"], ["int32"]), "oov_method": (["floormod", "farmhash"], ["x"]),
    "salt": ([None], [1, -1, [1, 2], [1, 2, 3], "x", 2 ** 64, [True, 1]]),
    "axis": ([-1, None], [0, 1, 2, [1], [-1, 1], [], 1.0, True]),
    "num_bins": ([1, 4, 1024], [None, 0, -1, 2 ** 63, 2.5]),
    "mask_value": ([None, "a", 3], [1.5, 2 ** 64]),
    "num_tokens": ([1, 4], [None, 0, 2 ** 40]),
    "bin_boundaries": ([None], [[], [0.0, 1.0], [1, 0], [NAN], [float("inf")], [True], 1.0]),
    "epsilon": ([0.01, 0.0001, 0.5], [0, 2, "x", NAN]),
    "vocabulary": ([], [["a"]]), "idf_weights": ([], [[1.0]]), "mean": ([], [0.0]), "variance": ([], [1.0]),
}
ENTRY_VALUES = {
    "source": (["c", "col umn", "Ünï"], ["", ["a", "b"], ["a"], [], ["a", ""], 3, None]),
    "invalid_utf8": (["error", "replace", "skip"], ["ignore", None]),
    "min_count": ([1, 2], [0, 1.5, True]), "min_document_frequency": ([1, 3], [-1, "2"]),
    "shape": ([None, [2], [2, 3]], [[0], [True], [], 2]), "weight": ([None, "w"], ["", 3]),
    "quantiles": (["sketch", "exact"], ["fast"]), "rank_error": ([0.01, 0.0001], [0, 1, NAN, "x"]),
}
ENTRY_KEYS_OF = {"Normalization": ["source", "shape"],
                 "Discretization": ["source", "shape", "weight", "quantiles", "rank_error"],
                 "Hashing": ["source", "invalid_utf8"], "CategoryEncoding": ["source"]}


def _near(good_and_bad):
    """Mostly a valid value, else one just outside, sometimes anything."""
    good, bad = good_and_bad
    outside = mostly(st.sampled_from(bad), values, 7)
    return mostly(st.sampled_from(good), outside, 8) if good else outside


@st.composite
def feature_entries(draw):
    layer = draw(mostly(st.sampled_from(LAYERS), scalars, 9))
    own = sorted(spec_lib.LAYER_DEFAULTS[layer]) if layer in LAYERS else []
    option_names = mostly(st.sampled_from(own + ["name", "dtype"]), st.sampled_from(OPTION_NAMES), 9)
    config = {}
    for key in draw(st.lists(option_names, max_size=3, unique=True)):
        config[key] = draw(_near(OPTION_VALUES[key]))
    size = {"Discretization": "num_bins", "Hashing": "num_bins", "CategoryEncoding": "num_tokens"}.get(layer)
    if size and draw(st.integers(0, 9)):  # these need a size: usually give one
        config.setdefault(size, draw(_near(OPTION_VALUES[size])))
    entry = {"layer": layer, "config": config if draw(st.integers(0, 19)) else draw(values)}
    applicable = ENTRY_KEYS_OF.get(layer, ["source", "invalid_utf8", *spec_lib.THRESHOLDS])
    entry_keys = mostly(st.sampled_from(applicable), st.sampled_from(sorted(ENTRY_VALUES)), 9)
    for key in draw(st.lists(entry_keys, max_size=2, unique=True)):
        entry[key] = draw(_near(ENTRY_VALUES[key]))
    return entry


specs = st.fixed_dictionaries({"features": st.dictionaries(feature_names, mostly(feature_entries(), values, 9),
                                                           min_size=1, max_size=3)})
raw_documents = mostly(specs, st.one_of(values, st.dictionaries(keys, values, max_size=3)))


def _accepted_spec_holds_up(raw):
    try:
        spec = spec_lib.spec_from_dict(raw)
    except SpecError:
        event("refused")
        return
    event("accepted")  # about a sixth of the spec-shaped documents (pytest --hypothesis-show-statistics)
    folded = [name.lower() for name in spec.features]
    assert len(set(folded)) == len(folded) and "golden" not in folded
    for name in spec.features:
        assert spec_lib.FEATURE_NAME_PATTERN.fullmatch(name), name
    assert spec_lib.spec_from_dict(spec.to_dict()) == spec
    # The manifest records the spec as JSON, and prepro.load parses it back.
    assert spec_lib.spec_from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@given(raw_documents)
def test_fuzz_spec_from_dict_raises_only_spec_error(raw):
    _accepted_spec_holds_up(raw)


@given(specs)
@settings(max_examples=60)  # each example writes and reads a file
def test_fuzz_load_spec_of_yaml_documents(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    try:
        path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    except (yaml.YAMLError, UnicodeEncodeError):  # not representable as YAML text (lone surrogates)
        return
    try:
        spec = spec_lib.load_spec(str(path))
    except SpecError:
        return
    assert spec_lib.spec_from_dict(spec.to_dict()) == spec


@given(st.one_of(st.binary(max_size=200),
                 st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.lists(st.sampled_from([b"features:", b"\n", b"  ", b"a: ", b"{", b"}", b"[", b"]", b"&x ", b"*x",
                                           b"!!python/object:os.system", b"- ", b"\xff", b"\x00", b"?", b"'", b"\"",
                                           b"layer: StringLookup", b"source: c", b"config:", b"!!binary", b"..."]),
                          max_size=40).map(b"".join)))
@settings(max_examples=60)
def test_fuzz_load_spec_of_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_bytes(data)
    try:
        spec_lib.load_spec(str(path))
    except SpecError:
        pass


# ---- Regression tests: crashes the fuzzer (or its review) found, each fixed ---------------

def _refused(raw, words):
    try:
        spec_lib.spec_from_dict(raw)
    except SpecError as e:
        assert words in str(e), str(e)
        return
    raise AssertionError(f"accepted: {raw!r}")


def test_regression_mixed_type_unknown_keys_do_not_crash_sorting():
    # sorted() of {1, 'a'} raised TypeError while building the message.
    _refused({"features": {"f": {"layer": "StringLookup"}}, 1: None, "a": None}, "unknown top-level keys")
    _refused({"features": {"f": {"layer": "StringLookup", 1: 2, "x": 3}}}, "unknown keys ['x', 1]")


def test_regression_unhashable_layer_is_a_spec_error():
    # `[] in LAYER_DEFAULTS` raised TypeError: unhashable type.
    _refused({"features": {"f": {"layer": ["StringLookup"]}}}, "layer must be one of")
    _refused({"features": {"f": {"layer": {"a": 1}}}}, "layer must be one of")


def test_regression_config_that_is_not_a_mapping_is_a_spec_error():
    # dict("ab") raised ValueError, dict(3) TypeError, and a list of pairs was taken as a mapping.
    for config in ("ab", 3, [["max_tokens", 3]], True):
        _refused({"features": {"f": {"layer": "StringLookup", "config": config}}}, "config must be a mapping")


def test_regression_non_string_feature_names_are_not_coerced():
    # str(1) used to make "1" a name; now a YAML 1, null, true, a date or bytes is an error.
    for name in (1, None, True, 1.5, datetime.date(2020, 1, 2), b"x"):
        _refused({"features": {name: {"layer": "StringLookup"}}}, "not a string (in YAML, quote it)")


def test_regression_spec_sources_with_stacked_columns():
    # Spec.sources sorted a mix of strings and tuples (TypeError).
    spec = spec_lib.spec_from_dict({"features": {"a": {"source": ["x", "y"], "layer": "Normalization"},
                                                 "b": {"source": "z", "layer": "StringLookup"}}})
    assert spec.sources == ["x", "y", "z"]


def test_regression_dtype_option_of_hashing_is_read_safely():
    # Hashing's table has no 'dtype' (a base Layer option): o["dtype"] raised KeyError.
    spec = spec_lib.spec_from_dict({"features": {"h": {"layer": "Hashing", "config": {"num_bins": 3}}}})
    assert spec.features["h"].options["num_bins"] == 3
    _refused({"features": {"h": {"layer": "Hashing", "config": {"num_bins": 3, "dtype": "float32"}}}},
             "dtype must be int32 or int64")


def test_regression_values_json_cannot_hold_are_refused():
    # A YAML date or bytes value for an option whose type was not checked reached the
    # manifest writer (json.dumps TypeError) after the whole job.
    for config in ({"name": datetime.date(2020, 1, 2)}, {"dtype": b"x"}, {"sparse": "no"},
                   {"encoding": datetime.date(2020, 1, 2)}):
        try:
            spec = spec_lib.spec_from_dict({"features": {"f": {"layer": "StringLookup", "config": config}}})
        except SpecError:
            continue
        json.dumps(spec.to_dict())


def test_regression_nan_and_bool_numbers_are_refused():
    _refused({"features": {"d": {"layer": "Discretization", "config": {"bin_boundaries": [math.nan]}}}}, "no NaN")
    _refused({"features": {"d": {"layer": "Discretization", "config": {"bin_boundaries": [True, 2]}}}},
             "list of numbers")
    _refused({"features": {"n": {"layer": "Normalization", "shape": [True]}}}, "shape must be a list of positive")
    _refused({"features": {"t": {"layer": "TextVectorization", "config": {"ngrams": True}}}}, "ngrams must be")


def test_regression_self_referencing_yaml_is_a_spec_error(tmp_path):
    # A YAML anchor that contains itself is a cyclic Python structure.
    path = tmp_path / "spec.yaml"
    path.write_text("features:\n  f: &e {layer: StringLookup, config: {name: *e}}\n")
    try:
        spec_lib.load_spec(str(path))
    except SpecError as e:
        assert "feature 'f'" in str(e)
    else:
        raise AssertionError("accepted a cyclic config")


def test_regression_invalid_utf8_spec_file_is_a_spec_error(tmp_path):
    # The YAML reader raised UnicodeDecodeError from inside the file read.
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"features:\n  f: {layer: StringLookup, source: \xff}\n")
    try:
        spec_lib.load_spec(str(path))
    except SpecError as e:
        assert "not UTF-8" in str(e)
    else:
        raise AssertionError("accepted invalid UTF-8")
