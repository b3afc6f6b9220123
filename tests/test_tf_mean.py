"""prepro.tf_mean gives tf.reduce_mean's float32 bits (real TensorFlow, computed here) on
every vector length that changes Eigen's summation order, and golden rows decline
where it does not hold."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from prepro import golden_numpy, tf_mean

tf = pytest.importorskip("tensorflow")

pytestmark = pytest.mark.skipif(not tf_mean.reproducible(1), reason="prepro.tf_mean holds on x86-64 only")


def _tf(values):
    return tf.reduce_mean(tf.constant(values, tf.float32)).numpy()


def _same(values):
    got, want = tf_mean.mean(values), _tf(values)
    assert got.dtype == np.float32 and got.tobytes() == want.tobytes(), (len(values), got, want)


def _lengths():
    lanes, leaf = tf_mean.LANES, tf_mean.LEAF
    around = [leaf, 2 * leaf, 3 * leaf, 4 * leaf + lanes, 5 * leaf, tf_mean.MAX_VALUES]
    return sorted(set(range(1, 4 * 4 * lanes + 3)) | {n + d for n in around for d in (-lanes - 1, -1, 0, 1, lanes + 1)
                                                       if 0 < n + d <= tf_mean.MAX_VALUES})


@pytest.mark.parametrize("scale", ["idf", "wide", "signed"])
def test_every_order_changing_length_gives_tensorflow_bits(scale):
    rng = np.random.default_rng({"idf": 1, "wide": 2, "signed": 3}[scale])
    for n in _lengths():
        if scale == "idf":  # what the OOV weight averages: log(1 + N / (1 + df))
            values = np.log1p(1e6 / (1 + rng.integers(0, 10 ** 6, n)))
        elif scale == "wide":
            values = np.exp(rng.normal(0, 8, n))
        else:
            values = rng.normal(0, 1, n) * 10.0 ** rng.integers(-6, 6, n)
        _same(values.astype(np.float32))


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 3000), elements=st.floats(-1e6, 1e6, width=32)))
def test_any_finite_vector(values):
    _same(values)


def test_denormals_are_flushed_as_tensorflow_flushes_them():
    """TensorFlow's threads run with DAZ and FTZ: a mean that would be subnormal is 0 (a
    case hypothesis found), subnormal inputs count as 0, and a partial sum that cancels
    to a subnormal is 0 before it is added on."""
    tiny = np.finfo(np.float32).tiny
    subnormal = np.float32(tiny) / np.float32(4)
    cases = [[0, tiny], [tiny, tiny, -tiny], [subnormal] * 3, [subnormal, 1.0], [-subnormal, -subnormal],
             [tiny * 1.5, -tiny] + [0.0] * 40, list(np.float32([tiny * 3, -tiny * 2.5]).repeat(20)),
             [1e-38] * 7 + [-9e-39] * 7]
    for values in cases:
        _same(np.asarray(values, np.float32))


def test_reproducible_only_where_one_thread_sums_on_an_avx_build():
    assert tf_mean.reproducible(1) and tf_mean.reproducible(tf_mean.MAX_VALUES)
    assert not tf_mean.reproducible(0) and not tf_mean.reproducible(tf_mean.MAX_VALUES + 1)
    with pytest.raises(ValueError, match="no values"):
        tf_mean.mean(np.zeros(0, np.float32))


def test_golden_rows_decline_an_oov_weight_tf_mean_cannot_reproduce(tmp_path, monkeypatch):
    """A vocabulary past MAX_VALUES (made small here): a row with an OOV token is left
    to Keras, a row of learned tokens is still computed."""
    from conftest import run_job, write_jsonl
    write_jsonl(tmp_path / "t.jsonl", [{"t": f"a b c{i % 5}"} for i in range(40)])
    arts = run_job(tmp_path, {"t": {"source": "t", "layer": "TextVectorization", "config": {"output_mode": "tf_idf"}}},
                   [str(tmp_path / "t.jsonl")], "jsonl", golden_rows=0)
    monkeypatch.setattr(tf_mean, "MAX_VALUES", 3)
    with pytest.raises(golden_numpy.NotCovered, match="cannot reproduce"):
        golden_numpy.feature_outputs(arts, [{"t": "a zzz"}])
    assert golden_numpy.feature_outputs(arts, [{"t": "a b"}])["t"].shape == (1, 8)


def test_not_reproducible_off_x86_64(monkeypatch):
    """Another packet width (an ARM build's NEON: 4 lanes) sums in another order: declined."""
    import platform
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert not tf_mean.reproducible(10)
