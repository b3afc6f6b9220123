"""The spec checked against Keras (item 5): a config Keras refuses is a spec error in
seconds, with Keras's reason, not an unusable artifact after the job.

Three kinds of refusal, each checked against real Keras 3.15:
- QUOTED: prepro's own (fast, Keras-free) validation refuses it and quotes Keras's
  reason; building the layer without that validation shows Keras says the same words.
- PREPRO_ONLY: prepro's rules or limits (types Keras would let through, options prepro
  does not support yet); Keras builds and calls these layers.
- OPAQUE: Keras refuses with a Python or TensorFlow error that names no option
  ("'float' object is not iterable"); prepro's message says which option is wrong.
KERAS_ONLY configs pass prepro's validation and only `check_against_keras` catches them.

The heavy part (importing Keras, building every layer) runs once per module: every
case is one feature of one spec given to `keras_check.refusals`.
"""

import os
import subprocess
import sys

import pytest

from prepro import keras_check
from prepro import spec as spec_lib
from prepro.spec import FeatureSpec, Spec, SpecError

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE_SPEC = os.path.join(HERE, "..", "examples", "spec.yaml")

# (layer, config, words that are in both prepro's message and Keras's own error)
QUOTED = [
    ("TextVectorization", {"output_sequence_length": -1}, "Dimension -1 must be >= 0"),
    ("TextVectorization", {"output_sequence_length": 2.5}, "`output_sequence_length` must be either None or an integer"),
    ("TextVectorization", {"output_sequence_length": 3, "output_mode": "count"},
     "`output_sequence_length` must not be set if `output_mode` is not 'int'"),
    ("TextVectorization", {"sparse": True}, "`sparse` may only be true if `output_mode` is"),
    ("StringLookup", {"sparse": True}, "`sparse` may only be true if `output_mode` is"),
    ("Hashing", {"num_bins": 3, "sparse": True}, "`sparse` may only be true if `output_mode` is"),
    ("Discretization", {"num_bins": 3, "sparse": True}, "may only be"),
    ("TextVectorization", {"ragged": True, "output_mode": "count"}, "`ragged` must not be true if `output_mode` is"),
    ("TextVectorization", {"pad_to_max_tokens": True}, "If pad_to_max_tokens is True, must set `max_tokens`"),
    ("StringLookup", {"pad_to_max_tokens": True}, "If pad_to_max_tokens is True, must set `max_tokens`"),
    ("StringLookup", {"max_tokens": 1, "num_oov_indices": 0}, "`max_tokens` must be greater than 1"),
    ("StringLookup", {"invert": True, "output_mode": "one_hot"}, "`output_mode` must be `'int'` when `invert` is true"),
    ("IntegerLookup", {"invert": True, "output_mode": "tf_idf"}, "`output_mode` must be `'int'` when `invert` is true"),
    ("IntegerLookup", {"max_tokens": 1, "num_oov_indices": 0}, "must be greater than 1"),
    ("TextVectorization", {"name": "a/b"}, "must be a string and cannot contain character `/`"),
    ("TextVectorization", {"name": "text x"}, "is not a valid root scope name"),
    ("StringLookup", {"name": "_x"}, "is not a valid root scope name"),
    ("Normalization", {"name": 3}, "must be a string and cannot contain character `/`"),
    ("Normalization", {"dtype": 3}, "Cannot interpret `dtype` argument. Expected a string or an instance of DTypePolicy"),
    ("StringLookup", {"salt": "x"}, "can only be a tuple of 2 integers, or a single integer"),
    ("Hashing", {"num_bins": 3, "salt": [1, 2, 3]}, "or a single integer"),
    ("Hashing", {"num_bins": 3, "salt": 2 ** 64}, "int too big to convert"),
    ("StringLookup", {"salt": 2 ** 64, "num_oov_indices": 2}, "int too big to convert"),
    ("IntegerLookup", {"salt": 3}, "`salt` can only be used when `oov_method='farmhash'`"),
    ("IntegerLookup", {"oov_method": "murmur"}, "Allowed values are: ('floormod', 'farmhash')"),
    ("IntegerLookup", {"vocabulary_dtype": "int32"}, "Only `vocabulary_dtype='int64'` is supported at this time"),
    ("Hashing", {"num_bins": 4, "dtype": "float32"}, "`dtype` should be an integer type"),
    ("Hashing", {"num_bins": 4, "dtype": "int16"}, "`dtype` should be an integer type"),
    ("TextVectorization", {"ngrams": [0]}, "All ngram_widths must be greater than 0"),
    ("TextVectorization", {"ngrams": 2.0}, "`ngrams` must be None, an integer, or a tuple of integers"),
    ("StringLookup", {"num_oov_indices": -1}, "`num_oov_indices` must be greater than or equal to 0"),
    ("IntegerLookup", {"num_oov_indices": -1}, "`num_oov_indices`"),
    ("TextVectorization", {"output_mode": "xyz"}, "Unknown value for `output_mode`"),
    ("StringLookup", {"output_mode": "xyz"}, "Unknown value for `output_mode`"),
    ("Discretization", {"num_bins": 3, "output_mode": "tf_idf"}, "Unknown value for `output_mode`"),
    ("Hashing", {"num_bins": 3, "output_mode": "xyz"}, "Invalid value for argument `output_mode`"),
    ("CategoryEncoding", {"num_tokens": 3, "output_mode": "int"}, "Unknown arg for output_mode"),
    ("Normalization", {"axis": 2}, "All `axis` values must be in the range [-ndim, ndim)"),
    ("Normalization", {"axis": 0}, "All `axis` values to be kept must have a known shape"),
    ("Discretization", {}, "You need to set either `num_bins` or `bin_boundaries`"),
    ("Discretization", {"bin_boundaries": [2.0, 1.0]}, "Expected sorted boundaries"),
    ("Hashing", {"num_bins": 0}, "The `num_bins` for `Hashing` cannot be `None` or non-positive values"),
    ("Hashing", {"num_bins": 2 ** 63}, "int too big to convert"),
    ("Hashing", {"num_bins": 3, "mask_value": 2 ** 64}, "out-of-range integer"),
    ("CategoryEncoding", {}, "num_tokens must be set to use this layer"),
    ("CategoryEncoding", {"num_tokens": 0}, "`num_tokens` must be >= 1"),
    ("TextVectorization", {"standardize": "upper"}, "Unknown value for `standardize` argument"),
    ("TextVectorization", {"split": "comma"}, "Unknown value for `split` argument"),
    ("StringLookup", {"mask_token": 3}, "Cannot convert 3 to EagerTensor of dtype string"),
    ("IntegerLookup", {"mask_token": "x"}, "Cannot convert 'x' to EagerTensor of dtype int64"),
    ("IntegerLookup", {"mask_token": 2 ** 70}, "out-of-range integer"),
]

# (layer, config, prepro's words): Keras builds and calls these layers.
PREPRO_ONLY = [
    ("TextVectorization", {"ragged": "yes"}, "ragged must be true or false"),
    ("StringLookup", {"sparse": "no", "output_mode": "count"}, "sparse must be true or false"),
    ("StringLookup", {"max_tokens": 2, "mask_token": ""}, "leaves no room for tokens after 2 reserved indices"),
    ("StringLookup", {"max_tokens": 2.5}, "max_tokens must be an integer or null"),
    ("TextVectorization", {"ngrams": 0}, "ngrams must be positive"),
    ("StringLookup", {"num_oov_indices": 1.5}, "num_oov_indices must be a non-negative integer"),
    ("StringLookup", {"output_mode": "binary"}, "write output_mode 'multi_hot'"),
    ("Discretization", {"num_bins": 0}, "num_bins must be a positive integer"),
    ("Discretization", {"bin_boundaries": [float("nan")]}, "bin_boundaries must be a list of numbers (no NaN)"),
    ("Hashing", {"num_bins": 2.5}, "num_bins must be a positive integer"),
    ("StringLookup", {"encoding": "bogus"}, "encoding must name a text encoding Python knows"),
    ("StringLookup", {"oov_token": 3}, "oov_token must be a string or null"),
    ("IntegerLookup", {"oov_token": "x"}, "oov_token must be an integer or null"),
    ("IntegerLookup", {"oov_token": 2 ** 70}, "oov_token 1180591620717411303424 does not fit in 64 bits"),
]

# (layer, config, prepro's words): Keras refuses too, with an error that names no option.
OPAQUE = [
    ("StringLookup", {"max_tokens": True}, "max_tokens must be an integer or null, got True"),
    ("Normalization", {"axis": 1.0}, "axis must be null, an integer or a list of integers"),
    ("Discretization", {"bin_boundaries": ["a"]}, "bin_boundaries must be a list of numbers"),
    ("Discretization", {"bin_boundaries": 1.0}, "bin_boundaries must be a list of numbers"),
    ("Hashing", {"num_bins": 3, "mask_value": 1.5}, "mask_value must be null, a string or an integer"),
    # The job would not see the alias as tf_idf, so the layer would be built without weights.
    ("TextVectorization", {"output_mode": "tf-idf"}, "write output_mode 'tf_idf'"),
]

# (layer, config, Keras's words): prepro's validation accepts these; only building and
# calling the layer shows Keras refuses them.
KERAS_ONLY = [
    ("TextVectorization", {"output_mode": "tf_idf", "sparse": True}, "index innermost dimension length must be <= params rank"),
    ("StringLookup", {"output_mode": "tf_idf", "sparse": True}, "index innermost dimension length must be <= params rank"),
    # Fails only in tf.data, where the batch size is unknown when the graph is traced.
    ("StringLookup", {"output_mode": "one_hot", "sparse": True}, "unsupported operand type(s) for *: 'int' and 'NoneType'"),
    ("IntegerLookup", {"output_mode": "one_hot", "sparse": True, "oov_token": None},
     "unsupported operand type(s) for *: 'int' and 'NoneType'"),
    ("TextVectorization", {"dtype": "foo"}, "Cannot convert 'foo' to a mixed precision DTypePolicy"),
    ("Normalization", {"dtype": "foo"}, "Cannot convert 'foo' to a mixed precision DTypePolicy"),
    ("Normalization", {"dtype": "string"}, "Cast double to string is not supported"),
    ("Normalization", {"dtype": "bool"}, "Value for attr 'T' of bool is not in the list of allowed values"),
    ("Discretization", {"num_bins": 3, "dtype": "foo"}, "Cannot convert 'foo' to a mixed precision DTypePolicy"),
    ("Discretization", {"num_bins": 3, "output_mode": "one_hot", "dtype": "string"},
     "Cannot convert 1 to EagerTensor of dtype string"),
    ("CategoryEncoding", {"num_tokens": 3, "dtype": "string"}, "Value for attr 'T' of string is not in the list"),
    # Works eagerly, fails in a compiled model (a graph), where the device half runs.
    ("CategoryEncoding", {"num_tokens": 3, "output_mode": "count", "sparse": True},
     "Value passed to parameter 'values' has DataType float32 not in list of allowed values"),
    ("Hashing", {"num_bins": 3, "output_mode": "count", "dtype": "string"}, "Value for attr 'T' of string"),
    ("TextVectorization", {"standardize": "os.path:join"}, "expected str, bytes or os.PathLike object"),
    ("TextVectorization", {"standardize": "builtins:len"}, "'int' object has no attribute 'shape'"),
]

# Configs that must build, call and be accepted by both checks.
GOOD = [
    ("TextVectorization", {}),
    ("TextVectorization", {"max_tokens": 3, "output_mode": "int", "output_sequence_length": 0}),
    ("TextVectorization", {"max_tokens": 20000, "output_sequence_length": 32, "ngrams": [1, 2]}),
    ("TextVectorization", {"ragged": True, "output_sequence_length": 4}),
    ("TextVectorization", {"output_mode": "multi_hot", "sparse": True, "split": None, "standardize": None}),
    ("TextVectorization", {"output_mode": "count", "sparse": True, "ngrams": 2, "split": "character"}),
    ("TextVectorization", {"output_mode": "tf_idf", "max_tokens": 3, "pad_to_max_tokens": True}),
    ("TextVectorization", {"output_mode": "tf_idf", "split": None}),
    ("TextVectorization", {"standardize": "tests.helpers_callables:my_standardize", "name": "text.x-1",
                           "dtype": "string"}),
    ("StringLookup", {}),
    ("StringLookup", {"num_oov_indices": 0}),
    ("StringLookup", {"num_oov_indices": 0, "max_tokens": 2}),
    ("StringLookup", {"num_oov_indices": 0, "mask_token": "", "output_mode": "one_hot"}),
    ("StringLookup", {"num_oov_indices": 3, "salt": [1, -2]}),
    ("StringLookup", {"mask_token": "a", "oov_token": "b"}),      # the trivial vocabulary avoids them
    ("StringLookup", {"mask_token": "[UNK]"}),                    # mask equal to OOV: Keras accepts it
    ("StringLookup", {"oov_token": None, "output_mode": "count", "sparse": True, "pad_to_max_tokens": True,
                      "max_tokens": 5}),
    ("StringLookup", {"num_oov_indices": 2 ** 40}),               # from a file: no list of OOV slots
    ("StringLookup", {"encoding": "UTF8"}),
    ("IntegerLookup", {"max_tokens": 5000}),
    ("IntegerLookup", {"mask_token": 0, "num_oov_indices": 2, "output_mode": "multi_hot"}),
    ("IntegerLookup", {"mask_token": -1}),
    ("IntegerLookup", {"oov_method": "farmhash", "salt": 7, "num_oov_indices": 2}),
    ("IntegerLookup", {"output_mode": "count", "sparse": True, "oov_token": None}),
    ("StringLookup", {"invert": True}),
    ("StringLookup", {"invert": True, "mask_token": "", "num_oov_indices": 2}),
    ("IntegerLookup", {"invert": True, "mask_token": 0}),
    ("StringLookup", {"output_mode": "tf_idf", "num_oov_indices": 2, "max_tokens": 6, "pad_to_max_tokens": True}),
    ("IntegerLookup", {"output_mode": "tf_idf", "num_oov_indices": 0}),
    ("TextVectorization", {"output_mode": "one_hot", "max_tokens": 5}),
    ("TextVectorization", {"encoding": "latin-1"}),
    ("Normalization", {"invert": True}),
    ("Normalization", {}),
    ("Normalization", {"axis": None}),
    ("Normalization", {"axis": [-1], "dtype": "float64"}),
    ("Normalization", {"dtype": "mixed_float16"}),
    ("Discretization", {"num_bins": 1}),
    ("Discretization", {"num_bins": 10, "epsilon": 0.001, "output_mode": "count", "sparse": True}),
    ("Discretization", {"bin_boundaries": []}),
    ("Discretization", {"bin_boundaries": [float("-inf"), 0, 1.5, 1.5]}),
    ("Discretization", {"num_bins": 3, "output_mode": "one_hot", "dtype": "int32"}),
    ("Hashing", {"num_bins": 1024, "salt": 7}),
    ("Hashing", {"num_bins": 4, "mask_value": "a", "output_mode": "multi_hot", "sparse": True}),
    ("Hashing", {"num_bins": 4, "mask_value": 3}),                # an integer mask: integer input
    ("Hashing", {"num_bins": 2 ** 62}),
    ("Hashing", {"num_bins": 4, "output_mode": "one_hot", "dtype": "int32"}),
    ("CategoryEncoding", {"num_tokens": 1, "output_mode": "one_hot"}),
    ("CategoryEncoding", {"num_tokens": 4, "output_mode": "count", "sparse": True, "dtype": "int32"}),
    ("CategoryEncoding", {"num_tokens": 2 ** 40}),                # too wide to call eagerly: built, called symbolically
]
# Numeric shapes: stacked columns and list columns, with their axes.
GOOD_ENTRIES = [
    {"source": ["lat", "lon"], "layer": "Normalization"},
    {"source": "img", "layer": "Normalization", "shape": [4, 4, 3], "config": {"axis": [1, -1]}},
    {"source": "img2", "layer": "Normalization", "shape": [2, 3], "config": {"axis": None}},
    {"source": "vec", "layer": "Discretization", "shape": [3], "config": {"num_bins": 4}, "weight": "w"},
]


def _cases(kind, rows):
    return [(f"{kind}{i:03d}", layer, config, words) for i, (layer, config, words) in enumerate(rows)]


ALL_REFUSED = _cases("quoted", QUOTED) + _cases("prepro", PREPRO_ONLY) + _cases("opaque", OPAQUE) + \
    _cases("keras", KERAS_ONLY)


@pytest.fixture(scope="module")
def keras_reasons():
    """Keras's reason for every case, built WITHOUT prepro's validation (FeatureSpec
    directly), in one call: {case name: reason}."""
    features = {name: FeatureSpec(name, f"col_{name}", layer, config) for name, layer, config, _ in ALL_REFUSED}
    return keras_check.refusals(Spec(features))


def _prepro_error(layer, config):
    entry = {"source": "c", "layer": layer, "config": config}
    with pytest.raises(SpecError) as err:
        spec_lib.spec_from_dict({"features": {"feat": entry}})
    assert "feature 'feat'" in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("name, layer, config, words", _cases("quoted", QUOTED), ids=lambda v: str(v)[:60])
def test_prepro_refuses_with_kerass_own_reason(keras_reasons, name, layer, config, words):
    assert words in _prepro_error(layer, config)
    assert name in keras_reasons, f"Keras accepts {layer}({config}); prepro must not claim it refuses it"
    assert words in keras_reasons[name], keras_reasons[name]


@pytest.mark.parametrize("name, layer, config, words", _cases("prepro", PREPRO_ONLY), ids=lambda v: str(v)[:60])
def test_prepro_only_rules_are_ones_keras_does_not_make(keras_reasons, name, layer, config, words):
    message = _prepro_error(layer, config)
    assert words in message and "Keras:" not in message
    assert name not in keras_reasons, keras_reasons.get(name)


@pytest.mark.parametrize("name, layer, config, words", _cases("opaque", OPAQUE), ids=lambda v: str(v)[:60])
def test_prepro_names_the_option_where_keras_fails_opaquely(keras_reasons, name, layer, config, words):
    assert words in _prepro_error(layer, config)
    assert name in keras_reasons


@pytest.mark.parametrize("name, layer, config, words", _cases("keras", KERAS_ONLY), ids=lambda v: str(v)[:60])
def test_keras_only_refusals_are_caught_by_the_check(keras_reasons, name, layer, config, words):
    spec = spec_lib.spec_from_dict({"features": {name: {"source": "c", "layer": layer, "config": config}}})
    assert words in keras_reasons[name]
    with pytest.raises(SpecError) as err:
        keras_check.check_against_keras(spec)
    message = str(err.value)
    assert message.startswith(f"feature '{name}': Keras refuses this {layer} config ") and words in message
    assert "\n" not in message and "\x1b" not in message and "Exception encountered" not in message


def test_both_num_bins_and_boundaries_quotes_kerass_constructor():
    import keras
    message = _prepro_error("Discretization", {"num_bins": 2, "bin_boundaries": [0.0]})
    with pytest.raises(ValueError) as keras_error:
        keras.layers.Discretization(num_bins=2, bin_boundaries=[0.0])
    words = "Both `num_bins` and `bin_boundaries` should not be set"
    assert words in message and words in str(keras_error.value)


def test_good_configs_build_and_call():
    features = {f"good{i:03d}": {"source": f"c{i}", "layer": layer, "config": config}
                for i, (layer, config) in enumerate(GOOD)}
    features.update({f"shaped{i}": entry for i, entry in enumerate(GOOD_ENTRIES)})
    spec = spec_lib.spec_from_dict({"features": features})
    assert keras_check.refusals(spec) == {}


def test_every_feature_of_the_example_spec_builds():
    spec = spec_lib.load_spec(EXAMPLE_SPEC)
    assert len(spec.features) == 7
    keras_check.check_against_keras(spec)


def test_the_error_names_the_first_feature_and_the_others():
    features = {name: FeatureSpec(name, "c", "TextVectorization", {"dtype": "foo"}) for name in ("b", "a", "c")}
    features["ok"] = FeatureSpec("ok", "c", "StringLookup", {})
    with pytest.raises(SpecError) as err:
        keras_check.check_against_keras(Spec(features))
    assert str(err.value).startswith("feature 'a': Keras refuses this TextVectorization config {\"dtype\": \"foo\"}: ")
    assert str(err.value).endswith("(Keras also refuses features ['b', 'c'])")


def test_callables_given_as_objects_and_custom_objects():
    import tensorflow as tf
    spec = spec_lib.spec_from_dict({"features": {"t": {"source": "c", "layer": "TextVectorization",
                                                       "config": {"standardize": tf.strings.lower}}}})
    keras_check.check_against_keras(spec)
    ref = spec_lib.spec_from_dict({"features": {"t": {"source": "c", "layer": "TextVectorization",
                                                      "config": {"standardize": "nowhere.module:fn"}}}})
    with pytest.raises(SpecError, match="feature 't': standardize: cannot import 'nowhere.module:fn'"):
        keras_check.check_against_keras(ref)


def test_standalone_command(tmp_path, capsys):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("features:\n  a: {source: c, layer: StringLookup}\n")
    bad.write_text("features:\n  b: {source: c, layer: Normalization, config: {dtype: foo}}\n")
    assert keras_check.main([str(good)]) == 0
    assert keras_check.main([str(good), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{good}: OK: 1 feature(s) build their Keras layers"] * 2
    assert err.splitlines() == [f"{bad}: error: feature 'b': Keras refuses this Normalization config "
                                f"{{\"dtype\": \"foo\"}}: Cannot convert 'foo' to a mixed precision DTypePolicy. "
                                f"Valid policies include 'mixed_float16', 'mixed_bfloat16', and the name of any "
                                f"float dtype such as 'float32'."]


def test_importing_the_check_imports_neither_keras_nor_tensorflow():
    code = ("import sys, prepro.keras_check, prepro.spec; "
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(HERE)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_a_refused_call_leaves_no_keras_name_scope_behind():
    """Checking a name TensorFlow refuses as a scope must not leave it on Keras's stack:
    variables the user creates afterwards keep their own names."""
    import keras
    feature = FeatureSpec("f", "c", "TextVectorization", {"name": "text x"})
    assert "is not a valid root scope name" in keras_check.refusals(Spec({"f": feature}))["f"]
    assert keras.layers.Dense(1, name="after").name == "after"
    variable = keras.Variable(1.0, name="v")
    assert variable.path == "v", variable.path
