"""Golden rows' expected outputs without TensorFlow: the artifact-built layers' outputs
on a few raw rows, computed with NumPy and pyarrow, exactly the arrays
`prepro.golden.feature_outputs` gets from Keras (same dtype, shape and bits).

Recording golden rows with Keras costs the TensorFlow import (~4.4 s) at the end of
every job; these layers' outputs on a handful of rows are simple enough to compute
exactly, so `prepro.golden.record` asks here first and uses Keras only for what this
module declines. It declines (`NotCovered`, before or while computing) rather than
guess: only cases `tests/test_golden_numpy.py` compares with real Keras layers, built
from real artifacts, dtype, shape and bits, are covered:

- TextVectorization with a built-in `standardize` and `split` (tokenized by
  `prepro.text`, the job's own reproduction of Keras's), any `ngrams` with a split,
  output modes int (padded to the longest row or to `output_sequence_length`),
  multi_hot, count and tf_idf; not `sparse`, `ragged`, one_hot;
- StringLookup and IntegerLookup in every output mode, with or without a mask token,
  `num_oov_indices` 0 or 1 (more OOV indices hash with FarmHash), `pad_to_max_tokens`;
  not `sparse` (inverse lookups have no golden outputs);
- Normalization (not `invert`), Discretization (not `sparse`), CategoryEncoding (not
  `sparse`; values in range), Hashing with a `salt` (SipHash-2-4, as
  `tf.strings.to_hash_bucket_strong`; without one Keras uses FarmHash: declined);
- no `dtype` in a config; a source column read as one type by all its features.

tf_idf needs the IDF weights `prepro.layers.Artifacts.idf_weights` computes with
TensorFlow: float64 `log(1 + N / (1 + df))` cast to float32. NumPy's float64 log may
differ from TensorFlow's by an ulp or so, which changes the float32 result only next
to a float32 rounding boundary: a weight whose float64 value is within 16 ulps of one
is declined. The OOV slot's weight is TensorFlow's float32 mean of all weights, whose
summation order `prepro.tf_mean` reproduces on x86-64 for up to 65,536 weights: a row with
an OOV token in a tf_idf feature is declined elsewhere (or if any weight is next to a
boundary).

Rows a layer rejects (an out-of-vocabulary value with `num_oov_indices: 0`, a number
outside int64) raise `Rejected`, as Keras raises, so `golden.record` passes over the
same rows; Keras's message is wanted only when no row is accepted, so that is
declined too.
"""

from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from prepro import spec as spec_lib
from prepro.spec import FeatureSpec

INT64_MAX = np.iinfo(np.int64).max
EPSILON = 1e-7  # keras.backend.epsilon(): Normalization's smallest standard deviation
_IDF_ULPS = 16


class NotCovered(Exception):
    """This evaluator does not compute exactly what Keras computes here: use Keras."""


class Rejected(ValueError):
    """A layer rejects the rows (as Keras raises on them)."""


def uncovered(spec: spec_lib.Spec) -> Dict[str, str]:
    """{feature: why} for the golden features (not inverse lookups) this module
    declines whatever the rows; empty when it may cover them all."""
    out = {}
    kinds: Dict[str, set] = {}
    for f in spec.features.values():
        for column in f.sources:
            kinds.setdefault(column, set()).add(f.value_kind)
    for name, f in sorted(spec.features.items()):
        if f.is_inverse_lookup:
            continue
        why = _why_not(f)
        if why is None and any(len(kinds[c] - {"hashable"}) > 1 for c in f.sources):
            why = "its source column is read as different types by different features"
        if why:
            out[name] = why
    return out


def _why_not(f: FeatureSpec) -> Optional[str]:
    o = f.options
    if "dtype" in f.config:
        return "a dtype in the config"
    if o.get("sparse"):
        return "sparse outputs"
    mode = o.get("output_mode")
    if f.is_text:
        for key, allowed in (("standardize", spec_lib.STANDARDIZE_OPTIONS), ("split", spec_lib.SPLIT_OPTIONS)):
            if callable(o[key]) or o[key] not in allowed:
                return f"{key} is a callable"
        if o["ngrams"] is not None and o["split"] is None:
            return "ngrams without a split"
        if o["ragged"]:
            return "ragged outputs"
        if mode not in ("int", "multi_hot", "count", "tf_idf"):
            return f"output_mode {mode!r}"
        return None
    if f.layer in ("StringLookup", "IntegerLookup"):
        if o["num_oov_indices"] not in (0, 1):
            return "more than one OOV index (FarmHash)"
        return None if mode in spec_lib.LOOKUP_MODES else f"output_mode {mode!r}"
    if f.layer == "Normalization":
        return "invert=True" if o["invert"] else None
    if f.layer == "Discretization":
        if mode != "int" and len(f.element_shape) != 1:
            return f"output_mode {mode!r} on a list column"
        return None
    if f.layer == "CategoryEncoding":
        return None
    if f.layer == "Hashing":
        if o["salt"] is None:
            return "Hashing without a salt (FarmHash)"
        if o["mask_value"] is not None and not isinstance(o["mask_value"], str):
            return "an integer mask_value"
        return None
    return f"layer {f.layer}"


class _Layout:
    """The raw columns' dtypes and shapes exactly as `Preprocessing.raw_dtype` and
    `raw_shape` decide them (the same methods, over the specs alone: building the
    Preprocessing would build the Keras layers)."""

    def __init__(self, specs: Mapping[str, FeatureSpec]):
        from prepro.training import Preprocessing
        self._prep = Preprocessing.__new__(Preprocessing)
        self._prep._specs, self._prep._raw_dtypes, self._prep._raw_shapes = dict(specs), {}, {}
        self.columns = self._prep._columns()

    def dtype(self, column: str) -> str:
        return self._prep.raw_dtype(column)

    def shape(self, column: str) -> tuple:
        return self._prep.raw_shape(column)


def feature_outputs(arts, rows: List[Mapping[str, Any]], features: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    """Each golden feature's output on `rows`, as `golden.feature_outputs` computes it
    with Keras. NotCovered where this module cannot be exact; Rejected for rows a layer
    rejects."""
    from prepro import golden
    names = features if features is not None else golden.golden_features(arts)
    specs = {n: arts.spec.features[n] for n in names}
    why = uncovered(spec_lib.Spec(specs))
    if why:
        raise NotCovered("; ".join(f"{n}: {w}" for n, w in why.items()))
    layout = _Layout(specs)
    try:  # what raw_tensors would fail on (a number outside int64): Keras's path rejects the rows too
        raw = golden.raw_arrays({c: (layout.dtype(c), layout.shape(c)) for c in layout.columns}, rows)
    except (ValueError, TypeError, OverflowError) as e:
        raise Rejected(f"{type(e).__name__}: {e}") from None
    state = _state(arts)
    try:
        return {name: _output(arts, state, specs[name], _gather(specs[name], raw)) for name in sorted(names)}
    except (Rejected, NotCovered):
        raise
    except Exception as e:  # never a reason to pass over a row Keras might accept: ask Keras
        raise NotCovered(f"{type(e).__name__}: {e}") from e


def _state(arts) -> Dict[str, Any]:
    """Per feature, what was read from the artifact (memoized: record calls repeatedly)."""
    cache = arts.__dict__.setdefault("_golden_numpy_state", {})
    return cache


def _gather(f: FeatureSpec, raw: Mapping[str, np.ndarray]) -> np.ndarray:
    """`Preprocessing._gather` in NumPy: a string/int column as (n, 1) (or as given),
    numeric columns cast to float32 and stacked, or reshaped to the declared shape."""
    if not f.is_numeric:
        x = raw[f.source]
        return x[:, None] if x.ndim == 1 else x
    columns = [raw[c].astype(np.float32) for c in f.sources]
    if f.shape:
        return columns[0].reshape((-1, *f.shape))
    columns = [c.reshape(-1, 1) for c in columns]
    return columns[0] if len(columns) == 1 else np.concatenate(columns, axis=-1)


def _output(arts, state, f: FeatureSpec, x: np.ndarray) -> np.ndarray:
    if f.is_text:
        return _text(arts, state, f, x)
    if f.layer in ("StringLookup", "IntegerLookup"):
        return _lookup(arts, state, f, x)
    if f.layer == "Normalization":
        return _normalization(arts, state, f, x)
    if f.layer == "Discretization":
        return _discretization(arts, state, f, x)
    if f.layer == "CategoryEncoding":
        return _category_encoding(f, x)
    return _hashing(f, x)


# -- vocabularies ------------------------------------------------------------------------

def _positions(arts, state, f: FeatureSpec, values) -> np.ndarray:
    """Each value's (an Arrow array) rank in the feature's vocabulary, -1 where it is
    not there; values looked up before are remembered, so `golden.record`'s repeated
    calls scan the vocabulary file once, a block at a time (a 20M-token vocabulary
    held whole would be the job's largest allocation, for 16 rows' lookups)."""
    import pyarrow as pa
    known = state.setdefault((f.name, "positions"), {})
    keys = values.to_pylist()
    new = [k for k in dict.fromkeys(keys) if k not in known]
    if new:
        ranks = arts.vocabulary_positions(f.name, pa.array(new, values.type))
        known.update(zip(new, ranks.tolist()))
    return np.array([known[k] for k in keys], np.int64)


def _vocabulary_size(arts, f: FeatureSpec) -> int:
    return arts.manifest["features"][f.name]["state"]["vocabulary_size"]


def _indices(f: FeatureSpec, positions: np.ndarray, is_mask: np.ndarray) -> np.ndarray:
    """Keras's IndexLookup._lookup_dense: a learned token's index is its rank plus the
    reserved slots (`spec.token_start`, prepro's one definition of the layout); any other
    value the OOV index (`num_oov_indices` 1: the slot after the mask's; 0: rejected);
    the mask token 0 in int mode, else int64's max, which the encoding drops."""
    start = spec_lib.token_start(f)
    o = f.options
    int_mode = o["output_mode"] == "int"
    slots = 1 if f.is_text else o["num_oov_indices"]  # TextVectorization: one OOV index, "[UNK]"
    oov = (positions < 0) & ~is_mask
    if oov.any() and slots == 0:
        raise Rejected("When `num_oov_indices=0` all inputs should be in vocabulary")
    out = np.where(positions >= 0, positions + start, start - slots).astype(np.int64)
    return np.where(is_mask, 0 if int_mode else INT64_MAX, out)


def _encode(indices: np.ndarray, mode: str, depth: int, dtype, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Keras's numerical_utils.encode_categorical_inputs on (n, k) indices (TF's paths):
    one_hot of a (n, 1) input is (n, depth), of (n, k) is (n, k, depth); multi_hot and
    count are (n, depth), indices outside [0, depth) dropped. tf_idf: counts as float32
    times the weights."""
    n = indices.shape[0]
    if mode == "int":
        return indices.astype(dtype)
    inside = (indices >= 0) & (indices < depth)
    if mode == "one_hot":
        squeezed = indices[..., 0] if indices.shape[-1] == 1 else indices
        inside = (squeezed >= 0) & (squeezed < depth)
        out = np.zeros((*squeezed.shape, depth), dtype)
        hot = np.nonzero(inside)
        out[(*hot, squeezed[hot])] = 1
        return out
    counts = np.zeros((n, depth), np.int64)
    rows = np.broadcast_to(np.arange(n)[:, None], indices.shape)
    np.add.at(counts, (rows[inside], indices[inside]), 1)
    if mode == "multi_hot":
        counts = np.minimum(counts, 1)
    if mode == "tf_idf":
        return counts.astype(np.float32) * weights
    return counts.astype(dtype)


def _depth(f: FeatureSpec, vocabulary_size: int) -> int:
    o = f.options
    return o["max_tokens"] if o["pad_to_max_tokens"] else spec_lib.token_start(f) + vocabulary_size


def _lookup(arts, state, f: FeatureSpec, x: np.ndarray) -> np.ndarray:
    import pyarrow as pa
    o = f.options
    flat = x.reshape(-1)
    if f.is_integer:
        values = pa.array(flat.astype(np.int64), pa.int64())
        is_mask = flat == o["mask_token"] if o["mask_token"] is not None else np.zeros(len(flat), bool)
    else:
        values = pa.array(_utf8(flat), pa.large_binary())
        is_mask = (np.array([v == o["mask_token"] for v in flat.tolist()], bool) if o["mask_token"] is not None
                   else np.zeros(len(flat), bool))
    indices = _indices(f, _positions(arts, state, f, values), is_mask).reshape(x.shape)
    mode = o["output_mode"]
    depth = _depth(f, _vocabulary_size(arts, f))
    weights = _tf_idf_weights(arts, state, f, indices, depth) if mode == "tf_idf" else None
    return _encode(indices, mode, depth, np.int64, weights)


def _utf8(values) -> List[bytes]:
    """Strings as the UTF-8 bytes TensorFlow gets from them (one it cannot encode: declined)."""
    try:
        return [v.encode("utf-8") for v in values.tolist()]
    except UnicodeEncodeError:
        raise NotCovered("a string that is not valid Unicode") from None


def _tf_idf_weights(arts, state, f: FeatureSpec, indices: np.ndarray, depth: int) -> np.ndarray:
    """The float32 weight of every output index, Keras's layout (the OOV slots first,
    zeros past the vocabulary when padded), for the indices these rows count."""
    start = spec_lib.token_start(f)
    used = np.unique(indices[(indices >= 0) & (indices < depth)])
    if (f.name, "idf") not in state:
        documents = arts.manifest["features"][f.name]["state"]["documents"]
        frequencies = arts.document_frequencies(f.name)
        with np.errstate(all="ignore"):
            logs = np.log(1 + documents / (1 + frequencies))  # float64, as Artifacts.idf_weights
        state[(f.name, "idf")] = logs
    logs = state[(f.name, "idf")]
    weights = np.zeros(depth, np.float32)
    weights[start:start + len(logs)] = logs[:depth - start].astype(np.float32)
    if (used < start).any():  # else the OOV slots' weights stay 0: no row counts them
        if (f.name, "oov") not in state:  # once per feature: the mean of all the weights
            _exact_in_float32(logs)
            state[(f.name, "oov")] = _oov_weight(arts, f, logs.astype(np.float32))
        weights[:start] = state[(f.name, "oov")]
    else:
        _exact_in_float32(logs[used[used < start + len(logs)] - start])
    return weights


def _exact_in_float32(weights: np.ndarray) -> None:
    spread = _IDF_ULPS * np.spacing(np.abs(weights))
    if ((weights - spread).astype(np.float32) != (weights + spread).astype(np.float32)).any():
        raise NotCovered("an IDF weight next to a float32 rounding boundary")


def _oov_weight(arts, f: FeatureSpec, weights: np.ndarray) -> np.float32:
    """The OOV slots' weight in the artifact-built layer: `tf.reduce_mean` of the learned
    weights when `Artifacts.tf_idf_state` passes the OOV tokens itself, else the
    `np.average` Keras's `set_vocabulary` pads with."""
    from prepro import tf_mean
    if arts._tf_idf_specials(f.name) is None:
        return np.average(weights)
    if not tf_mean.reproducible(len(weights)):
        raise NotCovered(f"an OOV token in a tf_idf feature whose weight (TensorFlow's float32 mean of "
                         f"{len(weights)} weights) prepro.tf_mean cannot reproduce here")
    return tf_mean.mean(weights)


# -- text ---------------------------------------------------------------------------------

def _text(arts, state, f: FeatureSpec, x: np.ndarray) -> np.ndarray:
    """TextVectorization: standardize, split and n-grams by `prepro.text`, then the
    lookup (mask "" and OOV "[UNK]"), then the padding or the encoding."""
    import pyarrow as pa
    from prepro import text
    o = f.options
    if x.shape[1:] != (1,) and o["split"] is not None:
        raise NotCovered("a text column that is not one string per row")
    flat = x.reshape(-1)
    docs = pa.array(_utf8(flat), pa.binary())
    doc_ids, tokens = text.tokenize(docs, o)
    doc_ids = np.asarray(doc_ids, np.int64)
    order = np.argsort(doc_ids, kind="stable")  # n-grams come width by width; Keras's per row
    doc_ids, tokens = doc_ids[order], tokens.take(pa.array(order, pa.int64()))
    is_mask = np.asarray(pa.compute.equal(pa.compute.binary_length(tokens), 0).to_numpy(zero_copy_only=False), bool)
    indices = _indices(f, _positions(arts, state, f, tokens.cast(pa.large_binary())), is_mask)
    n = len(flat)
    mode = o["output_mode"]
    if mode == "int":
        lengths = np.bincount(doc_ids, minlength=n)
        width = o["output_sequence_length"] if o["output_sequence_length"] is not None else int(
            lengths.max(initial=0))
        out = np.zeros((n, width), np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        position = np.arange(len(doc_ids)) - starts[doc_ids]
        keep = position < width
        out[doc_ids[keep], position[keep]] = indices[keep]
        return out
    depth = _depth(f, _vocabulary_size(arts, f))
    counts = np.zeros((n, depth), np.int64)
    inside = indices < depth
    np.add.at(counts, (doc_ids[inside], indices[inside]), 1)
    if mode == "multi_hot":
        return np.minimum(counts, 1)
    if mode == "count":
        return counts
    counted = np.nonzero(counts.any(axis=0))[0]
    weights = _tf_idf_weights(arts, state, f, counted, depth)
    return counts.astype(np.float32) * weights


# -- numeric and stateless ----------------------------------------------------------------

def _normalization(arts, state, f: FeatureSpec, x: np.ndarray) -> np.ndarray:
    """(x - mean) / max(sqrt(variance), epsilon), all in float32 as Keras computes it
    (mean and variance cast from float64 to float32, placed on the kept axes)."""
    if (f.name, "moments") not in state:
        mean, variance = arts.moments(f.name)
        rank = 1 + len(f.element_shape)
        shape = [1] * rank
        for axis, size in zip(spec_lib.normalization_axes(f), mean.shape):
            shape[axis] = size
        state[(f.name, "moments")] = (mean.reshape(shape).astype(np.float32),
                                      variance.reshape(shape).astype(np.float32))
    mean, variance = state[(f.name, "moments")]
    with np.errstate(all="ignore"):
        return np.divide(np.subtract(x, mean), np.maximum(np.sqrt(variance), np.float32(EPSILON)))


def _discretization(arts, state, f: FeatureSpec, x: np.ndarray) -> np.ndarray:
    """tf.raw_ops.Bucketize: how many float32 boundaries are <= x (NaN: all of them);
    int32 in int mode, else float32 encodings over len(boundaries) + 1 buckets."""
    entry = arts.manifest["features"][f.name]["state"]
    boundaries = arts.bin_boundaries(f.name) if "boundaries_file" in entry else f.options["bin_boundaries"]
    bounds = np.array([float(b) for b in boundaries], np.float32)
    buckets = np.searchsorted(bounds, x, side="right").astype(np.int32)
    mode = f.options["output_mode"]
    return _encode(buckets, mode, len(bounds) + 1, np.int32 if mode == "int" else np.float32)


def _category_encoding(f: FeatureSpec, x: np.ndarray) -> np.ndarray:
    depth = f.options["num_tokens"]
    values = x.astype(np.int64)
    if ((values < 0) | (values >= depth)).any():
        raise NotCovered("a CategoryEncoding value outside [0, num_tokens)")
    return _encode(values, f.options["output_mode"], depth, np.float32)


def _hashing(f: FeatureSpec, x: np.ndarray) -> np.ndarray:
    """Keras's Hashing with a salt: SipHash-2-4 keyed by the salt of each value's string
    (an integer's decimal form) modulo the bins (one fewer, shifted by one, with a mask)."""
    o = f.options
    salt = o["salt"] if isinstance(o["salt"], (list, tuple)) else [o["salt"], o["salt"]]
    k0, k1 = (int(s) & _M64 for s in salt)
    bins, mask = o["num_bins"], o["mask_value"]
    masked = mask is not None and bins > 1
    flat = x.reshape(-1).tolist()
    if x.dtype.kind in "iu":
        data = [b"%d" % v for v in flat]
    else:
        data = [v.encode("utf-8") if isinstance(v, str) else None for v in flat]
        if any(d is None for d in data):
            raise NotCovered("a Hashing value that is not a string")
    hashes = [_siphash24(k0, k1, d) % (bins - 1 if masked else bins) for d in data]
    out = np.array(hashes, np.int64).reshape(x.shape)
    if masked:
        out = np.where(np.array([v == mask for v in flat], bool).reshape(x.shape), 0, out + 1)
    mode = o["output_mode"]
    return _encode(out, mode, bins, np.int64 if mode == "int" else np.float32)


_M64 = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def _siphash24(k0: int, k1: int, data: bytes) -> int:
    """SipHash-2-4 (Aumasson and Bernstein), as highwayhash's SipHash that TensorFlow's
    StrongKeyedHash calls; pure Python: golden rows are a few values."""
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def rounds(count, v0, v1, v2, v3):
        for _ in range(count):
            v0 = (v0 + v1) & _M64
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _M64
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _M64
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _M64
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)
        return v0, v1, v2, v3

    whole = len(data) - len(data) % 8
    for i in range(0, whole, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = rounds(2, v0, v1, v2, v3)
        v0 ^= m
    m = ((len(data) & 0xFF) << 56) | int.from_bytes(data[whole:], "little")
    v3 ^= m
    v0, v1, v2, v3 = rounds(2, v0, v1, v2, v3)
    v0 ^= m
    v2 ^= 0xFF
    v0, v1, v2, v3 = rounds(4, v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3
