"""`index_policy: stable`: an update keeps every base token's index and appends new
tokens in adapt()'s order among themselves (checked against a real adapt() over all
the rows), up to max_tokens; the layer round-trips through a .keras file."""

import json
import random

import numpy as np
import pytest

import prepro
from conftest import adapted_layer, write_jsonl
from pipelines.analyze import run_analyze
from prepro.spec import SpecError, spec_from_dict

FEATURES = {
    "review": {"source": "text", "layer": "TextVectorization", "index_policy": "stable",
               "config": {"ngrams": 2, "output_mode": "tf_idf"}},
    "carrier": {"source": "carrier", "layer": "StringLookup", "index_policy": "stable",
                "config": {"max_tokens": 12, "num_oov_indices": 2}},
    "flight": {"source": "flight", "layer": "IntegerLookup", "index_policy": "stable"},
    "ranked": {"source": "carrier", "layer": "StringLookup"},
}
SPEC = spec_from_dict({"features": FEATURES})


def _rows(n, seed):
    rnd = random.Random(seed)
    words = [f"w{i}" for i in range(seed * 30, seed * 30 + 80)]
    carriers = [f"C{i}" for i in range(seed * 4, seed * 4 + 8)]
    return [{"text": " ".join(rnd.choice(words[:rnd.randint(3, 80)]) for _ in range(rnd.randint(1, 8))),
             "carrier": rnd.choice(carriers[:rnd.randint(1, 8)]), "flight": rnd.randint(seed * 40, seed * 40 + 90)}
            for _ in range(n)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("stable")
    old, new = _rows(400, 0), _rows(500, 1)
    files = [write_jsonl(root / "old.jsonl", old), write_jsonl(root / "new.jsonl", new)]
    run_analyze(SPEC, files[:1], "jsonl", str(root / "base"), keep_state=True, golden_rows=0)
    run_analyze(SPEC, files[1:], "jsonl", str(root / "update"), base=str(root / "base"), golden_rows=0, num_shards=3)
    return {"root": root, "old": old, "all": old + new,
            "base": prepro.load(str(root / "base")), "update": prepro.load(str(root / "update"))}


def _adapted_vocabulary(layer, config, values):
    return adapted_layer(layer, config, values).get_vocabulary()


@pytest.mark.parametrize("name,column", [("review", "text"), ("carrier", "carrier"), ("flight", "flight")])
def test_every_base_token_keeps_its_index_and_new_tokens_follow_in_adapts_order(runs, name, column):
    config = {k: v for k, v in FEATURES[name].get("config", {}).items() if k != "max_tokens"}
    layer = FEATURES[name]["layer"]
    base, update = runs["base"].layer(name), runs["update"].layer(name)
    old_vocabulary, new_vocabulary = base.get_vocabulary(), update.get_vocabulary()
    # Token by token: the base's index of every base token is its index in the update.
    assert new_vocabulary[:len(old_vocabulary)] == old_vocabulary
    token_start = runs["base"].manifest["features"][name]["state"]["token_start"]
    if layer != "TextVectorization":  # and the layers map each base token to the same index
        probe = np.array(old_vocabulary[token_start:])
        np.testing.assert_array_equal(np.asarray(update(probe)), np.asarray(base(probe)))
    # The base's tokens are adapt()'s on the old rows; the appended ones are adapt()'s
    # order over all the rows, among the tokens the base did not have.
    values = [r[column] for r in runs["all"]]
    full = _adapted_vocabulary(layer, config, values)
    appended = [t for t in full[token_start:] if t not in set(old_vocabulary)]
    limit = FEATURES[name].get("config", {}).get("max_tokens")
    room = None if limit is None else limit - len(old_vocabulary)
    assert new_vocabulary[len(old_vocabulary):] == appended[:room]
    assert len(appended) > (room or 0) > 0 or limit is None  # the cut bites where max_tokens is set


def test_a_stable_tf_idf_layer_weights_each_token_by_all_the_rows(runs):
    """IDF weights follow the tokens to their stable indices: each equals adapt()'s
    weight for the same token over all the rows."""
    texts = [r["text"] for r in runs["all"]]
    reference = adapted_layer("TextVectorization", FEATURES["review"]["config"], texts)
    idf = lambda layer: dict(zip(layer.get_vocabulary(), np.asarray(layer._lookup_layer.idf_weights_const)))
    weights, got = idf(reference), idf(runs["update"].layer("review"))
    assert got.keys() == weights.keys()
    assert all(got[t] == weights[t] for t in got if t not in ("", "[UNK]"))
    # The OOV slot's is the mean of the others, summed in another order: within float32 rounding.
    np.testing.assert_allclose(got["[UNK]"], weights["[UNK]"], rtol=1e-6)


def test_the_default_policy_ranks_everything_again(runs):
    rows = runs["all"]
    full = _adapted_vocabulary("StringLookup", {}, [r["carrier"] for r in rows])
    assert runs["update"].layer("ranked").get_vocabulary() == full


def test_a_stable_layer_round_trips_through_a_keras_file(runs, tmp_path):
    import keras
    layer = runs["update"].layer("carrier")
    inputs = keras.Input(shape=(1,), dtype="string")
    model = keras.Model(inputs, layer(inputs))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    probe = np.array([["C0"], ["C5"], ["C9"], ["nope"]])
    np.testing.assert_array_equal(np.asarray(loaded(probe)), np.asarray(model(probe)))


def test_a_full_run_with_the_stable_policy_is_adapts_ranking(runs, tmp_path):
    """Without a base there are no indices to keep: stable gives the ranking."""
    assert runs["base"].layer("carrier").get_vocabulary() == _adapted_vocabulary(
        "StringLookup", {"max_tokens": 12, "num_oov_indices": 2}, [r["carrier"] for r in runs["old"]])


def test_stable_updates_are_deterministic(runs, tmp_path):
    root = runs["root"]
    other = str(tmp_path / "other")
    run_analyze(SPEC, [str(root / "new.jsonl")], "jsonl", other, base=str(root / "base"), golden_rows=0,
                num_shards=1)
    from conftest import snapshot
    assert snapshot(other) == snapshot(str(root / "update"))


def test_index_policy_is_checked_in_the_spec():
    with pytest.raises(SpecError, match="index_policy must be one of"):
        spec_from_dict({"features": {"a": {"layer": "StringLookup", "index_policy": "frozen"}}})
    with pytest.raises(SpecError, match="index_policy applies to vocabulary layers only"):
        spec_from_dict({"features": {"a": {"layer": "Normalization", "index_policy": "stable"}}})
    assert spec_from_dict({"features": {"a": {"layer": "StringLookup", "index_policy": "stable"}}}).to_dict()[
        "features"]["a"]["index_policy"] == "stable"


def test_a_stable_update_from_a_base_without_kept_state_is_refused_before_the_job(runs, tmp_path):
    from pipelines.base import BaseError
    plain = str(tmp_path / "plain")
    run_analyze(SPEC, [str(runs["root"] / "old.jsonl")], "jsonl", plain, golden_rows=0)
    with pytest.raises(BaseError, match="has no kept state"):
        run_analyze(SPEC, [str(runs["root"] / "new.jsonl")], "jsonl", str(tmp_path / "out"), base=plain,
                    golden_rows=0)
    assert not (tmp_path / "out").exists()


def test_a_chain_of_stable_updates_keeps_the_first_steps_indices(runs, tmp_path):
    third = write_jsonl(tmp_path / "third.jsonl", _rows(300, 2))
    out = str(tmp_path / "third")
    run_analyze(SPEC, [third], "jsonl", out, base=str(runs["root"] / "update"), golden_rows=0)
    first, second, last = (a.layer("flight").get_vocabulary()
                           for a in (runs["base"], runs["update"], prepro.load(out)))
    assert last[:len(second)] == second and second[:len(first)] == first and len(last) > len(second)
