"""prepro.adapt(layers, inputs): the drop-in for layer.adapt(data), checked against adapt()."""

import keras
import numpy as np

import prepro
from conftest import assert_same_layer, write_jsonl


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
