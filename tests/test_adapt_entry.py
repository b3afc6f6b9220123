"""prepro.adapt(layers, inputs): the drop-in for layer.adapt(data), checked against adapt()."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import prepro
from conftest import assert_same_layer, write_jsonl
from prepro import SpecError


def test_adapt_sets_the_state_adapt_would(tmp_path):
    docs = ["The cat sat.", "the CAT ran", "a dog sat", "", "dog dog cat"]
    carriers = ["AA", "DL", "AA", "UA", "DL"]
    flights = [10, 20, 10, 30, 10]
    path = write_jsonl(tmp_path / "rows.jsonl",
                       [{"review": d, "carrier": c, "flight": f} for d, c, f in zip(docs, carriers, flights)])

    def make():
        return {"review": keras.layers.TextVectorization(max_tokens=6, ngrams=2, output_mode="count"),
                "carrier": keras.layers.StringLookup(num_oov_indices=2, output_mode="one_hot"),
                "flight": keras.layers.IntegerLookup(mask_token=0)}

    ours, reference = make(), make()
    returned = prepro.adapt(ours, [path], format="jsonl")
    assert returned is ours
    reference["review"].adapt(np.array(docs, dtype=object))
    reference["carrier"].adapt(np.array(carriers, dtype=object))
    reference["flight"].adapt(np.array(flights))
    assert_same_layer(ours["review"], reference["review"], np.array(docs + ["cat dog bird"], dtype=object))
    assert_same_layer(ours["carrier"], reference["carrier"], np.array(["AA", "XX", "UA"], dtype=object))
    assert_same_layer(ours["flight"], reference["flight"], np.array([[10, 0, 99]]))


def _numeric_rows(n=400):
    rng = np.random.default_rng(3)
    fare, dist = rng.gamma(2.0, 30.0, n), rng.normal(500.0, 120.0, n)
    tags = [["x", "y", "x"][: i % 4] for i in range(n)]
    codes = [int(c) for c in rng.integers(1, 6, n)]
    return fare, dist, tags, codes


def test_adapt_numeric_tf_idf_and_inverse_layers_as_adapt_would(tmp_path):
    """Normalization (one column and stacked columns), Discretization, a tf_idf lookup
    over a list column and an inverse lookup, each against the same layer after adapt()."""
    fare, dist, tags, codes = _numeric_rows()
    path = write_jsonl(tmp_path / "rows.jsonl", [
        {"fare": float(f), "dist": float(d), "tags": t, "code": c} for f, d, t, c in zip(fare, dist, tags, codes)])

    def make():
        return {"fare": keras.layers.Normalization(),
                "trip": keras.layers.Normalization(axis=None),
                "fare_bins": keras.layers.Discretization(num_bins=4, output_mode="one_hot"),
                "tags": keras.layers.StringLookup(output_mode="tf_idf"),
                "code": keras.layers.IntegerLookup(invert=True, mask_token=0)}

    ours, reference = make(), make()
    prepro.adapt(ours, [path], format="jsonl", sources={"trip": ["fare", "dist"], "fare_bins": "fare"},
                 feature_options={"fare_bins": {"quantiles": "exact"}})
    stacked = np.stack([fare, dist], axis=1)
    reference["fare"].adapt(fare.reshape(-1, 1))
    reference["trip"].adapt(stacked)
    reference["tags"].adapt(tf.ragged.constant(tags))
    reference["code"].adapt(np.array(codes))
    reference["fare_bins"].adapt(fare)
    for name, probe in (("fare", fare.reshape(-1, 1)), ("trip", stacked)):
        np.testing.assert_array_equal(np.asarray(ours[name](probe)), np.asarray(reference[name](probe)))
    probe = tf.ragged.constant([["x"], ["y", "z", "x"], []])
    np.testing.assert_array_equal(np.asarray(ours["tags"](probe)), np.asarray(reference["tags"](probe)))
    assert_same_layer(ours["code"], reference["code"], np.array([[0, 1, 2, 3, 9]]))
    # Discretization: exact quantiles here, which adapt()'s sketch only approximates;
    # the output kind equals adapt()'s and the bins are the data's quartiles.
    boundaries = np.asarray(ours["fare_bins"].bin_boundaries)
    assert len(boundaries) == len(reference["fare_bins"].bin_boundaries) == 3
    shares = [np.mean(fare < b) for b in boundaries]
    np.testing.assert_allclose(shares, [0.25, 0.5, 0.75], atol=1 / len(fare))
    got, want = np.asarray(ours["fare_bins"](fare[:5])), np.asarray(reference["fare_bins"](fare[:5]))
    assert got.dtype == want.dtype and got.shape == want.shape


@pytest.mark.parametrize("make, words", [
    (lambda: keras.layers.Hashing(num_bins=4), "Keras's has no adapt(): it has no state to learn"),
    (lambda: keras.layers.CategoryEncoding(num_tokens=4), "Keras's has no adapt()"),
    (lambda: keras.layers.Dense(3), "prepro adapts"),
    (lambda: keras.layers.Normalization(mean=1.0, variance=2.0), "constructed with its state (mean and variance)"),
    (lambda: keras.layers.Discretization(bin_boundaries=[0.0, 1.0]),
     "Cannot adapt a `Discretization` layer that has been initialized with `bin_boundaries`"),
    (lambda: _built(keras.layers.Normalization(), (None, 3)), "was built for moments of shape (3,), but feature 'fare'"),
    (lambda: keras.layers.StringLookup(output_mode="one_hot", sparse=True), "Keras refuses this StringLookup"),
    (lambda: keras.layers.StringLookup(max_tokens=2, mask_token=""), "leaves no room for tokens"),
], ids=["Hashing", "CategoryEncoding", "Dense", "Normalization-preset", "Discretization-preset",
        "Normalization-built", "Keras-refusal", "spec-refusal"])
def test_adapt_refuses_before_any_job_runs(tmp_path, make, words):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"fare": 1.5, "text": "a b"}])
    output = tmp_path / "out"
    layer = make()
    with pytest.raises(SpecError) as err:
        prepro.adapt({"fare": layer}, [path], format="jsonl", output=str(output))
    assert words in str(err.value)
    assert not output.exists(), "the job ran before the refusal"


def _built(layer, shape):
    layer.build(shape)
    return layer
