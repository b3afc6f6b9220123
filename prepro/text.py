"""TextVectorization's tokenization (standardize -> split -> n-grams) on Arrow arrays.

Each function reproduces one step of `keras.layers.TextVectorization._preprocess`
byte for byte, vectorised with pyarrow compute (no TensorFlow import, so Beam workers
start fast). Callables given as `standardize` or `split` receive TensorFlow tensors,
exactly as in Keras, so only they import TensorFlow.

Documents arrive as a binary array of valid UTF-8 (see `pipelines.extract` for the
invalid UTF-8 policy). Tokens leave as two parallel arrays: the index of the document
each token came from, and the token bytes. Counting needs nothing more; order within
a document does not matter to a vocabulary or to document frequencies.
"""

from typing import Any, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prepro import spec as spec_lib
from prepro.spec import STANDARDIZE_OPTIONS

# Keras's punctuation pattern (text_vectorization.py): the 32 characters of
# string.punctuation. tests/test_spec.py checks it against Keras's source.
STRIP_PUNCTUATION_REGEX = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'
NGRAM_SEPARATOR = b" "

Tokens = Tuple[np.ndarray, pa.Array]  # (document index per token, token bytes)


# Keras's built-in steps are byte maps on UTF-8: "lower" maps the bytes A-Z, the
# punctuation is 32 ASCII bytes (no byte of a multi-byte UTF-8 sequence is ASCII), and
# tf.strings.split splits on the six ASCII spaces. So they run as `bytes.translate`
# over a batch's whole data buffer (C, one pass, no regex, no list array): on 263 MB
# they cost 0.9 CPU s, where Arrow's regex replace and list split cost 3.0.
_LOWER = bytes.maketrans(bytes(range(ord("A"), ord("Z") + 1)), bytes(range(ord("a"), ord("z") + 1)))
_PUNCTUATION = b'!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\''
_WHITESPACE = b" \t\n\v\f\r"
_IS_PUNCTUATION = bytes(int(b in _PUNCTUATION) for b in range(256))
_IS_WHITESPACE = bytes(int(b in _WHITESPACE) for b in range(256))


def standardize(docs: pa.Array, how: Any) -> pa.Array:
    """Keras's `standardize`: "lower" is ASCII-only; punctuation is ASCII-only."""
    how = _resolve(how)
    if how is not None and not callable(how) and how not in STANDARDIZE_OPTIONS:
        raise ValueError(f"unknown standardize {how!r}")
    if how in ("lower", "strip_punctuation", "lower_and_strip_punctuation"):
        offsets, data = _offsets_and_data(docs)
        strip = how != "lower"
        out = data.translate(_LOWER if how != "strip_punctuation" else None, _PUNCTUATION if strip else b"")
        if strip:
            offsets = offsets - _bytes_before(offsets, np.frombuffer(data.translate(_IS_PUNCTUATION), np.bool_))
        return _binary_array(offsets, out)
    if callable(how):
        docs = _from_tensor(how(_to_tensor(docs)))
    return docs


def split(docs: pa.Array, how: Any) -> Tokens:
    how = _resolve(how)
    if how is None:
        return np.arange(len(docs), dtype=np.int64), docs
    if how == "whitespace":
        return split_whitespace(docs)
    if how == "character":
        return split_characters(docs)
    if callable(how):
        return _from_ragged(how(_to_tensor(docs)))
    raise ValueError(f"unknown split {how!r}")


def split_whitespace(docs: pa.Array) -> Tokens:
    """tf.strings.split(docs): tokens are the runs of bytes other than the six ASCII
    spaces, within a document. Their bytes are the buffer without its spaces, so the
    tokens are cut from it by their lengths alone (no list array, no filtering of the
    empty strings Arrow's split leaves)."""
    offsets, data = _offsets_and_data(docs)
    space = np.frombuffer(data.translate(_IS_WHITESPACE), np.bool_)
    size = len(space)
    if size == 0:
        return np.zeros(0, np.int64), pa.array([], pa.binary())
    # A token starts after a space or at a document's start, ends before a space or at
    # a document's end.
    after_break = np.empty(size, np.bool_)
    after_break[0], after_break[1:] = True, space[:-1]
    after_break[offsets[:-1][offsets[:-1] < size]] = True
    before_break = np.empty(size, np.bool_)
    before_break[-1], before_break[:-1] = True, space[1:]
    before_break[offsets[1:][offsets[1:] > 0] - 1] = True
    starts = np.flatnonzero(after_break & ~space)
    ends = np.flatnonzero(before_break & ~space) + 1
    token_offsets = np.zeros(len(starts) + 1, np.int64)
    np.cumsum(ends - starts, out=token_offsets[1:])
    # (np.compress, not translate's delete: deleting a byte in six is branchy, 2x slower)
    tokens = _binary_array(token_offsets, np.compress(~space, np.frombuffer(data, np.uint8)))
    per_doc = np.diff(np.searchsorted(starts, offsets))
    return np.repeat(np.arange(len(docs), dtype=np.int64), per_doc), tokens


def _offsets_and_data(docs: pa.Array) -> Tuple[np.ndarray, bytes]:
    """A binary array without nulls -> (its int64 offsets from 0, its bytes)."""
    docs = _binary(docs)
    if docs.null_count:
        raise ValueError("documents must not be null here")
    offsets = np.frombuffer(docs.buffers()[1], np.int32)[docs.offset:docs.offset + len(docs) + 1].astype(np.int64)
    data = docs.buffers()[2]
    lo, hi = (int(offsets[0]), int(offsets[-1])) if len(offsets) else (0, 0)
    return offsets - lo, data[lo:hi].to_pybytes() if data is not None and hi > lo else b""


def _bytes_before(offsets: np.ndarray, marked: np.ndarray) -> np.ndarray:
    """For each offset, how many marked bytes lie before it (few are marked: the
    positions of the marked ones are searched, not every byte summed)."""
    return np.searchsorted(np.flatnonzero(marked), offsets)


def _binary_array(offsets: np.ndarray, data) -> pa.Array:
    if len(data) >= 1 << 31:
        raise ValueError(f"{len(data)} bytes of text in one array: more than Arrow's binary limit of 2 GiB")
    return pa.BinaryArray.from_buffers(pa.binary(), len(offsets) - 1,
                                       [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])


def split_characters(docs: pa.Array) -> Tokens:
    """One token per code point of valid UTF-8: a new token starts at every byte
    that is not a continuation byte (0b10xxxxxx)."""
    docs = _binary(docs)
    offsets = np.frombuffer(docs.buffers()[1], dtype=np.int32)[docs.offset:docs.offset + len(docs) + 1]
    data = np.frombuffer(docs.buffers()[2], dtype=np.uint8) if docs.buffers()[2] else np.zeros(0, np.uint8)
    lo, hi = int(offsets[0]), int(offsets[-1])
    starts = lo + np.flatnonzero((data[lo:hi] & 0xC0) != 0x80)
    token_offsets = np.append(starts, hi).astype(np.int32)
    tokens = pa.BinaryArray.from_buffers(
        pa.binary(), len(starts), [None, pa.py_buffer(token_offsets), docs.buffers()[2]])
    doc_ids = np.searchsorted(offsets, starts, side="right") - 1
    return doc_ids.astype(np.int64), tokens


def ngram_widths(ngrams: Any) -> Tuple[int, ...]:
    """TextVectorization's `ngrams`: None -> (1,), an int n -> 1..n, a sequence as given."""
    if ngrams is None:
        return (1,)
    return tuple(range(1, ngrams + 1)) if isinstance(ngrams, int) else tuple(ngrams)


def window_starts(doc_ids: np.ndarray, width: int) -> np.ndarray:
    """Positions i where tokens i..i+width-1 all belong to one document (doc_ids sorted)."""
    if len(doc_ids) < width:
        return np.zeros(0, np.int64)
    starts = np.arange(len(doc_ids) - width + 1, dtype=np.int64)
    if width > 1:
        starts = starts[doc_ids[starts] == doc_ids[starts + width - 1]]
    return starts


def ngrams(tokens: Tokens, ngrams: Any) -> Tokens:
    """tf.strings.ngrams(ngram_width=widths, separator=" ") for every width."""
    if ngrams is None:
        return tokens
    doc_ids, values = tokens
    parts_ids, parts_tokens = [], []
    for width in ngram_widths(ngrams):
        starts = window_starts(doc_ids, width)
        pieces = [values.take(pa.array(starts + k)) for k in range(width)]
        grams = pieces[0] if width == 1 else pc.binary_join_element_wise(*pieces, NGRAM_SEPARATOR)
        parts_ids.append(doc_ids[starts])
        parts_tokens.append(grams)
    return np.concatenate(parts_ids), pa.concat_arrays(parts_tokens)


def unigrams(docs: pa.Array, options: dict) -> Tokens:
    """standardize, then split: the tokens n-grams are built from."""
    return split(standardize(_binary(docs), options["standardize"]), options["split"])


def tokenize(docs: pa.Array, options: dict) -> Tokens:
    """The whole TextVectorization preprocessing for one batch of documents."""
    return ngrams(unigrams(docs, options), options["ngrams"])


def widths_never_collide(options: dict) -> bool:
    """Whether n-grams of different widths can never be the same string.

    With whitespace split a w-gram holds exactly w-1 spaces; with character split it
    holds 2w-1 code points. Other splits can make a unigram equal a bigram ("a b"),
    which Keras counts as one token.
    """
    return ngram_widths(options["ngrams"]) == (1,) or options["split"] in ("whitespace", "character")


def _resolve(how: Any) -> Any:
    """A 'module:function' reference from a spec file -> the function it names."""
    if isinstance(how, str) and spec_lib._is_callable_ref(how):
        return spec_lib.resolve_callable(how)
    return how


def _binary(arr: pa.Array) -> pa.Array:
    if pa.types.is_large_binary(arr.type) or pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.binary()) if pa.types.is_large_binary(arr.type) else arr.cast(pa.string())
    return arr.view(pa.binary()) if pa.types.is_string(arr.type) else arr


def _to_tensor(docs: pa.Array):
    import tensorflow as tf
    return tf.constant(np.array(docs.to_pylist(), dtype=object), dtype=tf.string)


def _from_tensor(tensor) -> pa.Array:
    return pa.array(list(np.asarray(tensor.numpy()).reshape(-1)), pa.binary())


def _from_ragged(ragged) -> Tokens:
    import tensorflow as tf
    if not isinstance(ragged, tf.RaggedTensor):
        ragged = tf.RaggedTensor.from_tensor(ragged)
    doc_ids = ragged.value_rowids().numpy().astype(np.int64)
    return doc_ids, pa.array(list(ragged.flat_values.numpy()), pa.binary())
