"""prepro.text's byte-level standardize and split against TensorFlow's own string ops,
the ones keras.layers.TextVectorization._preprocess calls (tf.strings.lower,
tf.strings.regex_replace with Keras's punctuation pattern, tf.strings.split), on
random documents: every ASCII space, punctuation, capitals, multi-byte and Unicode
spaces (which TF does not split on), empty documents, and slices of a bigger array
(an Arrow array's data need not start at 0)."""

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, strategies as st

from prepro import text

tf = pytest.importorskip("tensorflow")

ALPHABET = list("aZ09 \t\n\v\f\r") + list(text._PUNCTUATION.decode()) + ["é", "Ü", "\u00a0", "\u2003", "ß", "日", "𝔘"]
DOCS = st.lists(st.text(alphabet=st.sampled_from(ALPHABET), max_size=30), min_size=1, max_size=25)


def keras_standardize(docs, how):
    tensor = tf.constant(np.array(docs, dtype=object), dtype=tf.string)
    if how in ("lower", "lower_and_strip_punctuation"):
        tensor = tf.strings.lower(tensor)
    if how in ("strip_punctuation", "lower_and_strip_punctuation"):
        tensor = tf.strings.regex_replace(tensor, text.STRIP_PUNCTUATION_REGEX, "")
    return [bytes(v) for v in tensor.numpy()]


def sliced(docs, lead):
    """`docs` as a slice of an array with `lead` other documents before it."""
    padded = pa.array([b"XX ,"] * lead + docs, pa.binary())
    return padded.slice(lead)


@given(docs=DOCS, lead=st.integers(0, 3),
       how=st.sampled_from(["lower", "strip_punctuation", "lower_and_strip_punctuation", None]))
def test_standardize_is_tensorflows(docs, lead, how):
    raw = [d.encode("utf-8") for d in docs]
    assert text.standardize(sliced(raw, lead), how).to_pylist() == keras_standardize(raw, how)


@given(docs=DOCS, lead=st.integers(0, 3))
def test_whitespace_split_is_tensorflows(docs, lead):
    raw = [d.encode("utf-8") for d in docs]
    doc_ids, tokens = text.split(sliced(raw, lead), "whitespace")
    ragged = tf.strings.split(tf.constant(np.array(raw, dtype=object), dtype=tf.string))
    assert tokens.to_pylist() == [bytes(t) for t in ragged.flat_values.numpy()]
    assert doc_ids.tolist() == ragged.value_rowids().numpy().tolist()


def test_whole_pipeline_on_empty_and_space_only_batches():
    for docs in ([b""], [b"", b""], [b" \t\n"], [b"!!!", b" , "]):
        doc_ids, tokens = text.unigrams(pa.array(docs, pa.binary()), {
            "standardize": "lower_and_strip_punctuation", "split": "whitespace"})
        assert (len(doc_ids), len(tokens)) == (0, 0)


def test_null_documents_are_refused_not_miscounted():
    with pytest.raises(ValueError, match="null"):
        text.split(pa.array([b"a", None], pa.binary()), "whitespace")
