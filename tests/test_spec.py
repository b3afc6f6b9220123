"""The spec: Keras's own option names and defaults, early and clear errors."""

import inspect

import keras
import pytest

from prepro import spec as spec_lib
from prepro import text


@pytest.mark.parametrize("layer", sorted(spec_lib.LAYER_DEFAULTS))
def test_option_table_matches_installed_keras(layer):
    params = inspect.signature(getattr(keras.layers, layer).__init__).parameters
    keras_defaults = {k: spec_lib.REQUIRED if p.default is inspect.Parameter.empty else p.default
                      for k, p in params.items()
                      if k not in ("self", "kwargs") and k not in spec_lib.STATE_OPTIONS}
    assert keras_defaults == spec_lib.LAYER_DEFAULTS[layer]


def test_punctuation_pattern_is_keras_pattern():
    source = inspect.getsource(keras.src.layers.preprocessing.text_vectorization)
    assert repr(text.STRIP_PUNCTUATION_REGEX)[1:-1].replace("\\\\", "\\") in source or \
        text.STRIP_PUNCTUATION_REGEX in source


def test_yaml_spec_round_trip(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("features:\n"
                    "  review:  {source: text, layer: TextVectorization, config: {max_tokens: 20000, ngrams: [1, 2]}}\n"
                    "  carrier: {source: carrier, layer: StringLookup, config: {num_oov_indices: 1}}\n"
                    "  flight:  {source: flight, layer: IntegerLookup, config: {max_tokens: 5000}}\n")
    spec = spec_lib.load_spec(str(path))
    assert spec.sources == ["carrier", "flight", "text"]
    assert spec.features["review"].options["split"] == "whitespace"
    assert spec_lib.spec_from_dict(spec.to_dict()).to_dict() == spec.to_dict()


@pytest.mark.parametrize("entry, message", [
    ({"layer": "PCA"}, "layer must be one of"),
    ({"layer": "Hashing"}, "Hashing needs 'num_bins' in config"),
    ({"layer": "Hashing", "config": {"num_bins": 0}}, "num_bins must be a positive integer"),
    ({"layer": "Hashing", "config": {"num_bins": 8, "salt": [1, 2, 3]}}, "salt must be"),
    ({"layer": "Hashing", "config": {"num_bins": 8, "sparse": True}}, "sparse applies to"),
    ({"layer": "Hashing", "config": {"num_bins": 8}, "min_count": 2}, "apply to vocabulary layers only"),
    ({"layer": "CategoryEncoding"}, "needs 'num_tokens'"),
    ({"layer": "CategoryEncoding", "config": {"num_tokens": 4, "output_mode": "int"}}, "output_mode must be"),
    ({"layer": "Normalization", "min_count": 2}, "apply to vocabulary layers only"),
    ({"layer": "Discretization"}, "exactly one of num_bins and bin_boundaries"),
    ({"layer": "Discretization", "config": {"num_bins": 4, "bin_boundaries": [1.0]}}, "exactly one of"),
    ({"layer": "Discretization", "config": {"bin_boundaries": [2, 1]}}, "sorted list"),
    ({"layer": "Discretization", "config": {"num_bins": 4}, "rank_error": 0}, "rank_error must be"),
    ({"layer": "Discretization", "config": {"num_bins": 4}, "quantiles": "fast"}, "quantiles must be"),
    ({"layer": "Normalization", "weight": "w"}, "weight (a column name) applies to Discretization"),
    ({"layer": "Normalization", "config": {"mean": 0.0}}, "computed by prepro"),
    ({"layer": "Normalization", "config": {"axis": 0}}, "keeps the batch axis"),
    ({"layer": "Normalization", "config": {"axis": 2}}, "out of range"),
    ({"layer": "Normalization", "source": ["a", "b"], "shape": [2]}, "not to stacked columns"),
    ({"layer": "StringLookup", "source": ["a", "b"]}, "source must be a column name"),
    ({"layer": "StringLookup", "quantiles": "exact"}, "apply to Normalization and Discretization only"),
    ({"layer": "StringLookup", "config": {"max_token": 3}}, "has no option 'max_token'"),
    ({"layer": "StringLookup", "config": {"vocabulary": ["a"]}}, "computed by prepro"),
    ({"layer": "StringLookup", "config": {"max_tokens": 1}}, "leaves no room"),
    ({"layer": "IntegerLookup", "config": {"mask_token": "x"}}, "mask_token must be int"),
    ({"layer": "TextVectorization", "config": {"split": "comma"}}, "split must be one of"),
    ({"layer": "TextVectorization", "config": {"ngrams": 0}}, "ngrams must be"),
    ({"layer": "StringLookup", "config": {"output_mode": "tf_idf"}}, "tf_idf is supported for TextVectorization"),
    ({"layer": "StringLookup", "min_count": 0}, "min_count must be a positive integer"),
    ({"layer": "TextVectorization", "min_document_frequency": "2"}, "min_document_frequency must be"),
    ({"layer": "StringLookup", "invalid_utf8": "ignore"}, "invalid_utf8 must be"),
])
def test_bad_spec_names_feature_and_problem(entry, message):
    with pytest.raises(spec_lib.SpecError) as err:
        spec_lib.spec_from_dict({"features": {"feat": entry}})
    assert "feature 'feat'" in str(err.value) and message in str(err.value)


def test_token_start_is_keras_layout():
    f = lambda layer, **c: spec_lib.FeatureSpec("x", "x", layer, c)
    assert spec_lib.token_start(f("TextVectorization")) == 2
    assert spec_lib.token_start(f("TextVectorization", output_mode="count")) == 1
    assert spec_lib.token_start(f("StringLookup", mask_token="", num_oov_indices=3)) == 4
    assert spec_lib.token_start(f("StringLookup", mask_token="", output_mode="multi_hot")) == 1
    assert spec_lib.token_start(f("IntegerLookup", num_oov_indices=0)) == 0


@pytest.mark.parametrize("entry, rank_error", [
    ({}, 0.001),
    ({"config": {"num_bins": 4, "epsilon": 0.0001}}, 0.0001),   # tighter than the default: used
    ({"config": {"num_bins": 4, "epsilon": 0.05}}, 0.001),      # looser: never loosens prepro's
    ({"config": {"num_bins": 4, "epsilon": 0.0001}, "rank_error": 0.01}, 0.01),  # explicit wins
])
def test_discretization_epsilon_and_rank_error(entry, rank_error):
    entry = {"layer": "Discretization", "config": {"num_bins": 4}, **entry}
    feature = spec_lib.spec_from_dict({"features": {"x": entry}}).features["x"]
    assert feature.rank_error == rank_error
