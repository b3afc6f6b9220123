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
    ({"layer": "Hashing", "config": {"num_bins": 0}}, "num_bins must be positive"),
    ({"layer": "Hashing", "config": {"num_bins": 8, "salt": [1, 2, 3]}}, "salt must be"),
    ({"layer": "Hashing", "config": {"num_bins": 8, "sparse": True}}, "sparse=True needs an output_mode other than 'int'"),
    ({"layer": "Hashing", "config": {"num_bins": 8}, "min_count": 2}, "apply to vocabulary layers only"),
    ({"layer": "CategoryEncoding"}, "needs 'num_tokens'"),
    ({"layer": "CategoryEncoding", "config": {"num_tokens": 4, "output_mode": "int"}}, "output_mode must be"),
    ({"layer": "Normalization", "min_count": 2}, "apply to vocabulary layers only"),
    ({"layer": "Discretization"}, "set one of num_bins and bin_boundaries"),
    ({"layer": "Discretization", "config": {"num_bins": 4, "bin_boundaries": [1.0]}}, "set only one of"),
    ({"layer": "Discretization", "config": {"bin_boundaries": [2, 1]}}, "bin_boundaries must be sorted"),
    ({"layer": "Discretization", "config": {"num_bins": 4}, "rank_error": 0}, "rank_error must be"),
    ({"layer": "Discretization", "config": {"num_bins": 4}, "quantiles": "fast"}, "quantiles must be"),
    ({"layer": "Normalization", "weight": "w"}, "['weight'] apply to Discretization only"),
    ({"layer": "Normalization", "config": {"mean": 0.0}}, "computed by prepro"),
    ({"layer": "Normalization", "config": {"axis": 0}}, "keeps the batch axis"),
    ({"layer": "Normalization", "config": {"axis": 2}}, "out of range"),
    ({"layer": "Normalization", "source": ["a", "b"], "shape": [2]}, "not to stacked columns"),
    ({"layer": "StringLookup", "source": ["a", "b"]}, "source must be a column name"),
    ({"layer": "StringLookup", "quantiles": "exact"}, "apply to Normalization and Discretization only"),
    ({"layer": "StringLookup", "config": {"max_token": 3}}, "has no option 'max_token'"),
    ({"layer": "StringLookup", "config": {"vocabulary": ["a"]}}, "computed by prepro"),
    ({"layer": "StringLookup", "config": {"max_tokens": 1}}, "max_tokens must be greater than 1"),
    ({"layer": "StringLookup", "config": {"max_tokens": 2, "mask_token": ""}}, "leaves no room"),
    ({"layer": "IntegerLookup", "config": {"mask_token": "x"}}, "mask_token must be an integer or null"),
    ({"layer": "TextVectorization", "config": {"split": "comma"}}, "split must be one of"),
    ({"layer": "TextVectorization", "config": {"ngrams": 0}}, "ngrams must be"),
    ({"layer": "StringLookup", "config": {"output_mode": "tf_idf", "invert": True}}, "invert=True needs output_mode 'int'"),
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


# Feature names become directories and file names under the artifact root and keys of
# manifest.json: one portable path component each (prepro.spec.FEATURE_NAME_RULE).
@pytest.mark.parametrize("name", ["a", "Z", "9", "age", "user_id", "x.y-z_0", "review.v2", "a" * 100,
                                  "goldens", "golden_rows", "a..b"])
def test_safe_feature_names_are_accepted(name):
    spec = spec_lib.spec_from_dict({"features": {name: {"source": "c", "layer": "StringLookup"}}})
    assert list(spec.features) == [name]


@pytest.mark.parametrize("name", ["../../x", "/abs", "a/b", "a\\b", "", ".", "..", ".hidden", "-x", "_x",
                                  "a b", "tab\t", "a\n", "é", "naïve", "a:b", "a*", "x" * 101, "manifest.json/",
                                  "\x00", "a\u2028b"])
def test_unsafe_feature_names_are_refused_before_anything_runs(name):
    with pytest.raises(spec_lib.SpecError) as err:
        spec_lib.spec_from_dict({"features": {name: {"source": "c", "layer": "StringLookup"}}})
    assert repr(name) in str(err.value) and "not allowed" in str(err.value)
    assert "1 to 100 characters from A-Z, a-z, 0-9" in str(err.value)


@pytest.mark.parametrize("name", ["golden", "Golden", "GOLDEN"])
def test_golden_is_reserved_in_any_case(name):
    with pytest.raises(spec_lib.SpecError, match=f"'{name}' is reserved .*golden-rows directory"):
        spec_lib.spec_from_dict({"features": {name: {"source": "c", "layer": "StringLookup"}}})


def test_feature_names_equal_ignoring_case_are_refused():
    features = {"Age": {"source": "a", "layer": "Normalization"}, "age": {"source": "a", "layer": "Normalization"}}
    with pytest.raises(spec_lib.SpecError, match="'Age' and 'age' differ only in case"):
        spec_lib.spec_from_dict({"features": features})


@pytest.mark.parametrize("key, kind", [("1", "int"), ("1.5", "float"), ("null", "NoneType"), ("yes", "bool"),
                                       ("off", "bool"), ("2020-01-02", "date"), ("!!binary YWJj", "bytes")])
def test_yaml_keys_that_are_not_strings_are_a_clear_error(tmp_path, key, kind):
    path = tmp_path / "spec.yaml"
    path.write_text(f"features:\n  {key}: {{source: c, layer: StringLookup}}\n")
    with pytest.raises(spec_lib.SpecError) as err:
        spec_lib.load_spec(str(path))
    assert f"is a {kind}, not a string (in YAML, quote it)" in str(err.value)


def test_quoted_yaml_keys_are_names(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("features:\n  '1': {source: c, layer: StringLookup}\n  'yes': {source: c, layer: StringLookup}\n")
    assert sorted(spec_lib.load_spec(str(path)).features) == ["1", "yes"]


@pytest.mark.parametrize("source", ["../weird column ü", "a/b", " ", "golden", "Ünïcode\ttab"])
def test_source_columns_are_data_not_restricted(source):
    spec = spec_lib.spec_from_dict({"features": {"f": {"source": source, "layer": "StringLookup"}}})
    assert spec.features["f"].source == source


@pytest.mark.parametrize("entry", [{"source": "", "layer": "StringLookup"}, {"source": 3, "layer": "StringLookup"},
                                   {"source": None, "layer": "StringLookup"},
                                   {"source": ["a", ""], "layer": "Normalization"},
                                   {"source": "x", "layer": "Discretization", "config": {"num_bins": 2}, "weight": ""}])
def test_source_and_weight_columns_must_be_non_empty_strings(entry):
    with pytest.raises(spec_lib.SpecError, match="must be a column name"):
        spec_lib.spec_from_dict({"features": {"f": entry}})


def test_cli_refuses_an_unsafe_feature_name_and_writes_nothing(tmp_path, capsys):
    from pipelines import cli
    (tmp_path / "data.csv").write_text("c\nx\n")
    (tmp_path / "spec.yaml").write_text("features:\n  ../../escaped: {source: c, layer: StringLookup}\n")
    out = tmp_path / "deep" / "out"
    status = cli.main(["analyze", "--spec", str(tmp_path / "spec.yaml"), "--input", str(tmp_path / "data.csv"),
                       "--format", "csv", "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert status == 1 and len(err.splitlines()) == 1
    assert err.startswith("prepro analyze: error: ") and "'../../escaped' is not allowed" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "spec.yaml"]
