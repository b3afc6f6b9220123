"""TF-IDF and n-grams: layers built from artifacts equal adapted ones, bit for bit.

adapt() in tf_idf mode counts documents (rows, empty ones included) and, per token,
the documents it occurs in; IDF is log(1 + N / (1 + df)) in float64 cast to float32;
the OOV slot gets the float32 mean of the learned weights. Every test runs the real
job and a real adapt() on the same data.
"""

import random

import numpy as np
import pytest

import prepro
from conftest import adapted_layer, assert_same_layer, run_job, write_jsonl
from test_parity import DICKINSON, DICKINSON_PROBE, ODYSSEY, UNICODE, _keras_config, _text_job as _job


def zipf_corpus(seed, docs, words=300):
    """Zipf-like word frequencies with repeats inside documents, empty documents,
    case and punctuation variants: many count and document-frequency ties."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(words)]
    weights = [1 / (i + 1) for i in range(words)]
    out = []
    for _ in range(docs):
        n = rng.choice([0, 1, 3, 8, 15])
        tokens = rng.choices(vocab, weights, k=n)
        out.append(" ".join(t.upper() if rng.random() < 0.1 else t + rng.choice(["", "", ",", "."])
                            for t in tokens))
    return out


TF_IDF_CONFIGS = {
    "uni": {"output_mode": "tf_idf"},
    "bi": {"output_mode": "tf_idf", "ngrams": 2},
    "tri13": {"output_mode": "tf_idf", "ngrams": [1, 3]},
    "bi_small": {"output_mode": "tf_idf", "ngrams": 2, "max_tokens": 9},
    "bi_large": {"output_mode": "tf_idf", "ngrams": 2, "max_tokens": 5000},
    "padded": {"output_mode": "tf_idf", "max_tokens": 40, "pad_to_max_tokens": True},
}


def _check(arts, docs, configs, probe):
    for name, cfg in configs.items():
        reference = adapted_layer("TextVectorization", _keras_config(cfg), docs)
        built = arts.layer(name)
        assert_same_layer(built, reference, np.array(probe, dtype=object))
        # The weights themselves, OOV slot included, are the same bits.
        np.testing.assert_array_equal(np.asarray(built._lookup_layer.idf_weights),
                                      np.asarray(reference._lookup_layer.idf_weights))


@pytest.mark.parametrize("corpus", ["dickinson", "odyssey", "unicode"])
def test_guide_and_unicode_corpora(tmp_path, corpus):
    docs, probe = {"dickinson": (DICKINSON, DICKINSON + DICKINSON_PROBE),
                   "odyssey": (ODYSSEY, ODYSSEY + ["ὄνειροι ἄγνωστοι, μὲν μὲν"]),
                   "unicode": (UNICODE, UNICODE + ["école ÉCOLE 😀 a\u00a0b"])}[corpus]
    configs = {k: TF_IDF_CONFIGS[k] for k in ("uni", "bi", "tri13")}
    _check(_job(tmp_path, docs, configs), docs, configs, probe)


def test_zipf_corpus_every_ngram_setting_with_ties_at_the_cut(tmp_path):
    docs = zipf_corpus(seed=11, docs=600)
    arts = _job(tmp_path, docs, TF_IDF_CONFIGS)
    _check(arts, docs, TF_IDF_CONFIGS, docs[:80] + ["w1 w2 unseen w1 w1", ""])
    # The premise: bi_small's cut (max_tokens 9 = OOV + 8 learned) falls inside a run
    # of equal counts.
    full = adapted_layer("TextVectorization", {"output_mode": "count", "ngrams": 2}, docs)
    totals = np.asarray(full(np.array(docs, dtype=object))).sum(axis=0)[1:]
    assert totals[8 - 1] == totals[8]


def test_documents_count_empty_rows_and_repeats_once(tmp_path):
    docs = ["a a a b", "", "b c", "   ", "a", "c c c c"]
    arts = _job(tmp_path, docs, {"t": {"output_mode": "tf_idf"}})
    assert arts.manifest["features"]["t"]["state"]["documents"] == 6
    assert dict(zip(arts.vocabulary("t"), arts.document_frequencies("t"))) == {"c": 2, "a": 2, "b": 2}
    _check(arts, docs, {"t": {"output_mode": "tf_idf"}}, docs + ["d a"])


def test_tf_idf_parts_equal_the_tf_idf_layer(tmp_path):
    import keras
    docs = zipf_corpus(seed=5, docs=200)
    configs = {"bi": TF_IDF_CONFIGS["bi"], "padded": TF_IDF_CONFIGS["padded"]}
    arts = _job(tmp_path, docs, configs)
    probe = np.array(docs[:40] + ["unseen w0"], dtype=object)
    for name in configs:
        counts, weights = arts.tf_idf_parts(name)
        # The count half reads the vocabulary file itself (nothing embedded).
        import tensorflow as tf
        assert isinstance(counts._lookup_layer.lookup_table._initializer, tf.lookup.TextFileInitializer)
        np.testing.assert_array_equal(np.asarray(keras.ops.multiply(counts(probe), weights)),
                                      np.asarray(arts.layer(name)(probe)))


def test_keras_file_round_trip(tmp_path):
    import keras
    docs = zipf_corpus(seed=7, docs=120)
    arts = _job(tmp_path, docs, {"bi": TF_IDF_CONFIGS["bi"]})
    inputs = keras.Input(shape=(1,), dtype="string")
    model = keras.Model(inputs, arts.layer("bi")(inputs))
    model.save(tmp_path / "m.keras")
    restored = keras.saving.load_model(tmp_path / "m.keras")
    probe = np.array([[d] for d in docs[:20]], dtype=object)
    np.testing.assert_array_equal(np.asarray(restored(probe)), np.asarray(model(probe)))


def test_prepro_adapt_sets_idf_weights(tmp_path):
    import keras
    docs = zipf_corpus(seed=9, docs=150)
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(docs) + "\n")
    layer = keras.layers.TextVectorization(output_mode="tf_idf", ngrams=2, max_tokens=60)
    prepro.adapt([layer], str(path), format="text")
    reference = adapted_layer("TextVectorization", {"output_mode": "tf_idf", "ngrams": 2, "max_tokens": 60}, docs)
    assert_same_layer(layer, reference, np.array(docs[:30], dtype=object))


def test_min_count_and_min_document_frequency(tmp_path):
    # "burst" occurs often but in only two documents: the df threshold alone drops it.
    docs = zipf_corpus(seed=13, docs=300) + ["burst burst burst burst", "burst burst"]
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": d} for d in docs])
    features = {
        "plain": {"source": "text", "layer": "TextVectorization", "config": {"output_mode": "tf_idf"}},
        "thresholded": {"source": "text", "layer": "TextVectorization", "config": {"output_mode": "tf_idf"},
                        "min_count": 4, "min_document_frequency": 3},
    }
    arts = run_job(tmp_path, features, [path], "jsonl")
    # Expected: Keras's own full vocabulary, counts and document frequencies, filtered.
    full = adapted_layer("TextVectorization", {"output_mode": "count"}, docs)
    per_doc = np.asarray(full(np.array(docs, dtype=object)))[:, 1:]
    counts, frequencies = per_doc.sum(axis=0), (per_doc > 0).sum(axis=0)
    vocabulary = full.get_vocabulary()[1:]
    expected = [t for t, c, f in zip(vocabulary, counts, frequencies) if c >= 4 and f >= 3]
    assert 0 < len(expected) < len(vocabulary)
    assert any(c >= 4 and f < 3 for c, f in zip(counts, frequencies))  # df threshold bites alone
    assert arts.vocabulary("thresholded") == expected
    assert arts.vocabulary("plain") == vocabulary
    entry = arts.manifest["features"]["thresholded"]
    assert entry["min_count"] == 4 and entry["min_document_frequency"] == 3
    assert entry["figures"]["below_thresholds"] == len(vocabulary) - len(expected)
    # The kept tokens' weights are the unthresholded ones (same N, same df).
    kept = dict(zip(arts.vocabulary("plain"), arts.idf_weights("plain")))
    np.testing.assert_array_equal(arts.idf_weights("thresholded"), [kept[t] for t in expected])


def test_min_count_alone_on_a_lookup_that_counts_no_document_frequencies(tmp_path):
    """min_count without tf_idf or a df threshold: documents are not counted (doc_count
    stays 0), and the count threshold alone decides (it once dropped every token)."""
    values = ["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"]
    path = write_jsonl(tmp_path / "v.jsonl", [{"v": v} for v in values])
    arts = run_job(tmp_path, {"v": {"source": "v", "layer": "StringLookup", "min_count": 2}}, [path], "jsonl")
    full = adapted_layer("StringLookup", {}, values).get_vocabulary()[1:]
    assert arts.vocabulary("v") == [t for t in full if values.count(t) >= 2] == ["a", "b", "c"]
    assert arts.figures("v")["below_thresholds"] == 1
