"""Warm start: `prepro.remap_embedding` and `prepro.remap_model_embeddings` carry a
trained embedding to a new vocabulary (an update that re-ranked the tokens). Checked
row by row against the two vocabularies, and end to end: a model trained on the old
vocabulary, remapped, gives the same outputs on inputs made only of surviving tokens."""

import random

import keras
import numpy as np
import pytest

import prepro
from conftest import write_jsonl
from pipelines.analyze import run_analyze
from prepro.spec import spec_from_dict

FEATURES = {
    "carrier": {"source": "carrier", "layer": "StringLookup", "config": {"num_oov_indices": 2}},
    "review": {"source": "text", "layer": "TextVectorization", "config": {"output_sequence_length": 6}},
    "fare": {"source": "fare", "layer": "Normalization"},
}
SPEC = spec_from_dict({"features": FEATURES})


def _rows(n, seed, carriers, words):
    rnd = random.Random(seed)
    return [{"carrier": rnd.choice(carriers), "fare": rnd.random(),
             "text": " ".join(rnd.choice(words) for _ in range(rnd.randint(1, 6)))} for _ in range(n)]


@pytest.fixture(scope="module")
def arts(tmp_path_factory):
    """Monday's artifact, and Tuesday's update in which the ranks change, some tokens are
    new and (with max_tokens unset) every old token survives; and a third artifact
    from other data that drops old tokens."""
    root = tmp_path_factory.mktemp("warm")
    monday = write_jsonl(root / "mon.jsonl", _rows(300, 0, ["AA", "AA", "UA", "DL", "B6"], ["late", "crew", "seat"]))
    tuesday = write_jsonl(root / "tue.jsonl", _rows(900, 1, ["DL", "DL", "B6", "WN", "NK"], ["seat", "bag", "gate"]))
    other = write_jsonl(root / "other.jsonl", _rows(200, 2, ["UA", "WN", "ZZ"], ["crew", "meal"]))
    run_analyze(SPEC, [monday], "jsonl", str(root / "old"), keep_state=True, golden_rows=0)
    run_analyze(SPEC, [tuesday], "jsonl", str(root / "new"), base=str(root / "old"), golden_rows=0)
    run_analyze(SPEC, [other], "jsonl", str(root / "other"), golden_rows=0)
    return {name: prepro.load(str(root / name)) for name in ("old", "new", "other")}


def test_every_surviving_tokens_row_moves_to_its_new_index(arts):
    old, new = arts["old"], arts["other"]
    old_vocabulary, new_vocabulary = old.layer("carrier").get_vocabulary(), new.layer("carrier").get_vocabulary()
    matrix = np.random.default_rng(0).normal(size=(len(old_vocabulary), 3)).astype(np.float32)
    remapped = prepro.remap_embedding(old, new, "carrier", matrix)
    assert remapped.shape == (len(new_vocabulary), 3) and remapped.dtype == np.float32
    np.testing.assert_array_equal(remapped[:2], matrix[:2])  # the two OOV rows stay
    for index, token in enumerate(new_vocabulary[2:], start=2):
        if token in old_vocabulary[2:]:
            np.testing.assert_array_equal(remapped[index], matrix[old_vocabulary.index(token)])
        else:
            np.testing.assert_array_equal(remapped[index], 0)  # zeros, as VocabInfo's default
    assert set(old_vocabulary[2:]) - set(new_vocabulary) and set(new_vocabulary[2:]) - set(old_vocabulary)


def test_new_rows_come_from_the_initializer(arts):
    old, new = arts["old"], arts["other"]
    matrix = np.ones((old.layer("carrier").vocabulary_size(), 2))
    filled = prepro.remap_embedding(old, new, "carrier", matrix, initializer=lambda shape, dtype: np.full(shape, 7.0))
    assert (filled == 7.0).any() and (filled == 1.0).any()
    uniform = prepro.remap_embedding(old, new, "carrier", matrix, initializer="random_uniform", seed=3)
    again = prepro.remap_embedding(old, new, "carrier", matrix, initializer="random_uniform", seed=3)
    np.testing.assert_array_equal(uniform, again)
    padded = prepro.remap_embedding(old, new, "carrier", matrix, rows=20)
    assert padded.shape == (20, 2)


def test_bad_calls_say_what_is_wrong(arts):
    old, new = arts["old"], arts["new"]
    with pytest.raises(ValueError, match="needs \\(at least 6, dim\\)"):
        prepro.remap_embedding(old, new, "carrier", np.zeros((3, 2)))
    with pytest.raises(ValueError, match="Normalization; embeddings remap the indices"):
        prepro.remap_embedding(old, new, "fare", np.zeros((3, 2)))
    with pytest.raises(KeyError, match="no feature 'nope'"):
        prepro.remap_embedding(old, new, "nope", np.zeros((3, 2)))
    with pytest.raises(ValueError, match="rows=2, but"):
        prepro.remap_embedding(old, new, "carrier", np.zeros((7, 2)), rows=2)


def _trained(model, x, seed=0):
    import tensorflow as tf
    y = np.random.default_rng(seed).normal(size=(len(x), 1)).astype(np.float32)
    model.compile(optimizer="adam", loss="mse")
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=3, verbose=0, shuffle=False)
    return model


def test_a_model_with_its_lookup_remapped_gives_the_same_outputs_on_surviving_tokens(arts):
    old, new = arts["old"], arts["new"]
    assert old.vocabulary("carrier") != new.vocabulary("carrier")[:len(old.vocabulary("carrier"))]  # re-ranked
    inputs = keras.Input(shape=(1,), dtype="string", name="carrier_raw")
    hidden = keras.layers.Flatten()(keras.layers.Embedding(old.layer("carrier").vocabulary_size(), 4)(
        old.layer("carrier")(inputs)))
    model = _trained(keras.Model(inputs, keras.layers.Dense(1)(hidden)), np.array([["AA"], ["UA"], ["DL"], ["B6"]] * 8))
    remapped = prepro.remap_model_embeddings(model, old, new, "carrier")
    surviving = np.array([[t] for t in old.vocabulary("carrier")] + [["never-seen"]])
    np.testing.assert_array_equal(np.asarray(remapped(surviving)), np.asarray(model(surviving)))
    assert remapped.layers[1].get_vocabulary() == new.layer("carrier").get_vocabulary()


def test_a_device_model_fed_indices_by_the_host_remaps_too(arts):
    """The host/device split: the model takes the lookup's indices as an input named
    after the feature; fed the new lookup's indices, the remapped model gives the old
    model's outputs on surviving tokens. A masked TextVectorization sequence too."""
    old, new = arts["old"], arts["new"]
    indices = keras.Input(shape=(6,), dtype="int64", name="review")
    embedded = keras.layers.Embedding(old.layer("review").vocabulary_size(), 3, mask_zero=True)(indices)
    model = keras.Model(indices, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(embedded)))
    texts = np.array(["late crew", "seat seat late", "crew", "late seat crew crew"])
    _trained(model, np.asarray(old.layer("review")(texts)))
    remapped = prepro.remap_model_embeddings(model, old, new, "review")
    assert old.layer("review")(texts).numpy().tolist() != new.layer("review")(texts).numpy().tolist()
    np.testing.assert_array_equal(np.asarray(remapped(new.layer("review")(texts))),
                                  np.asarray(model(old.layer("review")(texts))))


def test_a_model_without_an_embedding_fed_by_the_feature_is_refused(arts):
    inputs = keras.Input(shape=(1,), dtype="int64", name="other")
    model = keras.Model(inputs, keras.layers.Embedding(10, 2)(inputs))
    with pytest.raises(ValueError, match="no Embedding layer of model .* is fed by feature 'carrier'"):
        prepro.remap_model_embeddings(model, arts["old"], arts["new"], "carrier")
