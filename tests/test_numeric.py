"""Normalization and Discretization from artifacts, against real adapt() on the same data.

Real Parquet/CSV files, real Beam runs (in-process FnApiRunner), real Keras 3.
"""

import filecmp

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

import prepro
from conftest import state_path
from pipelines.analyze import run_analyze
from pipelines.errors import InputError
from prepro import spec as spec_lib
from prepro.stats.numeric import rank_error

N = 200_000


@pytest.fixture(scope="module")
def columns():
    rng = np.random.default_rng(42)
    return {
        "heavy": rng.pareto(1.5, N) * 10,                                   # heavy tail
        "discrete": rng.poisson(3, N).astype(np.float64),                    # many ties
        "bimodal": np.where(rng.random(N) < 0.3, rng.normal(-50, 1, N), rng.normal(80, 5, N)),
        "constant": np.full(N, 7.25),
        "offset": 10_000 + rng.normal(0, 1, N),                             # float32-hostile
        "image": rng.normal(0, 1, (N // 20, 4, 3)) * [1, 2, 3] + [0, 10, -5],
    }


@pytest.fixture(scope="module")
def analyzed(columns, tmp_path_factory):
    d = tmp_path_factory.mktemp("numeric")
    table = pa.table({k: v for k, v in columns.items() if k != "image"})
    pq.write_table(table.slice(0, N // 2), d / "a.parquet", row_group_size=30_000)
    pq.write_table(table.slice(N // 2), d / "b.parquet", row_group_size=30_000)
    images = columns["image"].reshape(len(columns["image"]), -1)
    pq.write_table(pa.table({"pixels": pa.array(list(images), pa.list_(pa.float64()))}), d / "img.parquet")
    features = {f"{c}_bins": {"source": c, "layer": "Discretization", "config": {"num_bins": 20}}
                for c in ("heavy", "discrete", "bimodal", "constant")}
    features["heavy_exact"] = {"source": "heavy", "layer": "Discretization",
                               "config": {"num_bins": 20}, "quantiles": "exact"}
    features["offset_norm"] = {"source": "offset", "layer": "Normalization"}
    features["stacked_norm"] = {"source": ["heavy", "bimodal", "offset"], "layer": "Normalization"}
    spec = spec_lib.spec_from_dict({"features": features})
    manifest = run_analyze(spec, [str(d / "a.parquet"), str(d / "b.parquet")], "parquet",
                           str(d / "out"))
    image_spec = spec_lib.spec_from_dict({"features": {
        f"img_{name}": {"source": "pixels", "layer": "Normalization", "shape": [4, 3], "config": {"axis": axis}}
        for name, axis in (("channels", -1), ("all", None), ("positions", [1, 2]))}})
    run_analyze(image_spec, [str(d / "img.parquet")], "parquet", str(d / "img_out"))
    return {"dir": d, "manifest": manifest, "arts": prepro.load(str(d / "out")),
            "img": prepro.load(str(d / "img_out"))}


@pytest.mark.parametrize("column", ["heavy", "discrete", "bimodal", "constant"])
def test_boundaries_within_bound_and_better_than_adapt(analyzed, columns, column):
    data = columns[column]
    arts = analyzed["arts"]
    state = arts.manifest["features"][f"{column}_bins"]["state"]
    ours = rank_error(data, arts.bin_boundaries(f"{column}_bins"), 20)
    assert ours <= state["rank_error_bound"] == 0.001
    adapted = keras.layers.Discretization(num_bins=20)
    adapted.adapt(tf.data.Dataset.from_tensor_slices(data).batch(4096))
    theirs = rank_error(data, adapted.bin_boundaries, 20)
    if column == "constant":
        assert ours == theirs == 0
    else:
        assert ours < theirs, (ours, theirs)
    # The layer buckets exactly as a Discretization given these boundaries does.
    layer = arts.layer(f"{column}_bins")
    reference = keras.layers.Discretization(bin_boundaries=arts.bin_boundaries(f"{column}_bins"))
    sample = data[:5000].reshape(-1, 1)
    np.testing.assert_array_equal(np.asarray(layer(sample)), np.asarray(reference(sample)))


def test_exact_quantiles_have_zero_rank_error(analyzed, columns):
    arts = analyzed["arts"]
    assert arts.manifest["features"]["heavy_exact"]["state"]["rank_error_bound"] == 0
    assert rank_error(columns["heavy"], arts.bin_boundaries("heavy_exact"), 20) == 0


def test_constant_column_repeats_its_boundary(analyzed):
    state = analyzed["arts"].manifest["features"]["constant_bins"]["state"]
    assert (state["num_boundaries"], state["distinct_boundaries"]) == (19, 1)
    assert set(analyzed["arts"].bin_boundaries("constant_bins")) == {7.25}


def test_value_equal_to_a_boundary_goes_to_the_upper_bucket(analyzed):
    arts = analyzed["arts"]
    boundaries = np.array(arts.bin_boundaries("heavy_bins"), np.float32)
    got = np.asarray(arts.layer("heavy_bins")(boundaries.reshape(-1, 1))).reshape(-1)
    assert got.tolist() == list(range(1, len(boundaries) + 1))
    # Repeated boundaries: a value equal to all of them lands above the last one.
    constant = arts.layer("constant_bins", output_mode="one_hot")
    assert np.asarray(constant(np.array([[7.25], [7.0]], np.float32))).argmax(-1).tolist() == [19, 0]


def test_normalization_equals_adapt_on_the_numpy_array(analyzed, columns):
    arts = analyzed["arts"]
    x = columns["offset"].reshape(-1, 1)
    adapted = keras.layers.Normalization()
    adapted.adapt(x)
    np.testing.assert_array_equal(np.asarray(arts.layer("offset_norm")(x)), np.asarray(adapted(x)))
    stacked = np.stack([columns["heavy"], columns["bimodal"], columns["offset"]], axis=1)
    adapted = keras.layers.Normalization()
    adapted.adapt(stacked)
    np.testing.assert_array_equal(np.asarray(arts.layer("stacked_norm")(stacked)), np.asarray(adapted(stacked)))


@pytest.mark.parametrize("name, axis", [("channels", -1), ("all", None), ("positions", (1, 2))])
def test_normalization_axis_semantics_on_fixed_shape_tensors(analyzed, columns, name, axis):
    images = columns["image"]
    adapted = keras.layers.Normalization(axis=axis)
    adapted.adapt(images)
    layer = analyzed["img"].layer(f"img_{name}")
    np.testing.assert_array_equal(np.asarray(layer(images)), np.asarray(adapted(images)))


def test_moments_closer_to_float64_truth_than_adapt_on_a_dataset(analyzed, columns):
    x = columns["offset"]
    mean, variance = analyzed["arts"].moments("offset_norm")
    adapted = keras.layers.Normalization()
    adapted.adapt(tf.data.Dataset.from_tensor_slices(x.reshape(-1, 1)).batch(4096))
    adapt_mean = float(np.asarray(adapted.mean).reshape(-1)[0])
    adapt_variance = float(np.asarray(adapted.variance).reshape(-1)[0])
    assert abs(mean[0] - x.mean()) < abs(adapt_mean - x.mean())
    assert abs(variance[0] - x.var()) < abs(adapt_variance - x.var())
    assert abs(variance[0] - x.var()) / x.var() < 1e-9


def test_numeric_state_is_byte_identical_across_workers_and_file_order(analyzed, tmp_path):
    d = analyzed["dir"]
    spec = spec_lib.spec_from_dict({"features": {
        "b": {"source": "bimodal", "layer": "Discretization", "config": {"num_bins": 20}},
        "n": {"source": ["heavy", "offset"], "layer": "Normalization"}}})
    run_analyze(spec, [str(d / "b.parquet"), str(d / "a.parquet")], "parquet", str(tmp_path / "one"))
    run_analyze(spec, [str(d / "a.parquet"), str(d / "b.parquet")], "parquet", str(tmp_path / "two"),
                ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    for f in ("b/boundaries.txt", "n/mean.txt", "n/variance.txt"):
        assert filecmp.cmp(state_path(tmp_path / "one", f), state_path(tmp_path / "two", f), shallow=False), f
    assert filecmp.cmp(tmp_path / "one" / "manifest.json", tmp_path / "two" / "manifest.json", shallow=False)


def test_many_parts_merge_in_two_levels(tmp_path, monkeypatch):
    """Parts merge in groups (PARTS_PER_MERGE) and then groups: same counts and exact
    quantiles as one level, moments to float64 rounding, sketch within its bound."""
    from pipelines import transforms
    rng = np.random.default_rng(5)
    x = rng.lognormal(2, 1, 20_000)
    path = tmp_path / "x.jsonl"
    path.write_text("".join(f'{{"x": {float(v)!r}}}\n' for v in x))
    spec = spec_lib.spec_from_dict({"features": {
        "exact": {"source": "x", "layer": "Discretization", "config": {"num_bins": 10}, "quantiles": "exact"},
        "sketch": {"source": "x", "layer": "Discretization", "config": {"num_bins": 10}},
        "norm": {"source": "x", "layer": "Normalization"}}})
    part_bytes = path.stat().st_size // 20 + 1  # 20 parts
    one = run_analyze(spec, [str(path)], "jsonl", str(tmp_path / "one"), part_bytes=part_bytes)
    monkeypatch.setattr(transforms, "PARTS_PER_MERGE", 3)
    two = run_analyze(spec, [str(path)], "jsonl", str(tmp_path / "two"), part_bytes=part_bytes)
    a, b = prepro.load(str(tmp_path / "one")), prepro.load(str(tmp_path / "two"))
    for name in ("exact", "sketch", "norm"):
        assert one["features"][name]["figures"] == two["features"][name]["figures"]
    assert a.bin_boundaries("exact") == b.bin_boundaries("exact")
    assert rank_error(x, b.bin_boundaries("sketch"), 10) <= 0.001
    np.testing.assert_allclose(b.moments("norm")[0], [x.mean()], rtol=1e-13)
    np.testing.assert_allclose(b.moments("norm")[1], [x.var()], rtol=1e-12)


def _csv(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("layer, body, message", [
    ("Normalization", "x\n1.5\n2\nabc\n", "row 3.*'abc' is not a number"),
    ("Normalization", "x\n1.5\ninf\n", "row 2.*infinite"),
    ("Discretization", "x\n\n\n", "no values to learn from"),
])
def test_bad_numeric_input_names_feature_file_and_row(tmp_path, layer, body, message):
    config = {"num_bins": 4} if layer == "Discretization" else {}
    spec = spec_lib.spec_from_dict({"features": {"f": {"source": "x", "layer": layer, "config": config}}})
    with pytest.raises(InputError, match=message) as e:
        run_analyze(spec, [_csv(tmp_path, body)], "csv", str(tmp_path / "out"))
    assert "'f'" in str(e.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_ragged_list_against_declared_shape(tmp_path):
    pq.write_table(pa.table({"v": pa.array([[1.0, 2.0], [1.0, 2.0, 3.0]], pa.list_(pa.float64()))}),
                   tmp_path / "r.parquet")
    spec = spec_lib.spec_from_dict({"features": {"f": {"source": "v", "layer": "Normalization", "shape": [2]}}})
    with pytest.raises(InputError, match=r"row 2.*3 values.*shape \[2\]"):
        run_analyze(spec, [str(tmp_path / "r.parquet")], "parquet", str(tmp_path / "out"))


def test_missing_nan_and_infinite_are_counted(tmp_path):
    path = _csv(tmp_path, "x,k\n1,a\n,a\nNaN,a\ninf,a\n3,a\n-INFINITY,a\n2,a\n")  # row 2: empty cell
    spec = spec_lib.spec_from_dict({"features": {"f": {"source": "x", "layer": "Discretization",
                                                        "config": {"num_bins": 2}, "quantiles": "exact"}}})
    figures = run_analyze(spec, [path], "csv", str(tmp_path / "out"))["features"]["f"]["figures"]
    assert (figures["rows"], figures["missing"], figures["nan"], figures["infinite"], figures["values"]) == \
        (7, 1, 1, 2, 5)
    # Median of the kept values [-inf, 1, 2, 3, inf]: the 3rd smallest, as Keras buckets it.
    assert prepro.load(str(tmp_path / "out")).bin_boundaries("f") == [2.0]


def test_weighted_rows(tmp_path):
    path = _csv(tmp_path, "x,w\n1,1\n2,0\n3,8\n4,1\n")
    spec = spec_lib.spec_from_dict({"features": {"f": {"source": "x", "layer": "Discretization",
                                                        "config": {"num_bins": 2}, "weight": "w",
                                                        "quantiles": "exact"}}})
    manifest = run_analyze(spec, [path], "csv", str(tmp_path / "out"))
    assert manifest["features"]["f"]["figures"]["zero_weight"] == 1
    assert prepro.load(str(tmp_path / "out")).bin_boundaries("f") == [3.0]  # 8 of 10 weight at 3


def test_jsonl_numbers_and_lists(tmp_path):
    rows = ['{"x": 1, "v": [1.0, 2.0]}', '{"x": 2.5, "v": [3, 4.5]}', '{"x": null, "v": null}']
    (tmp_path / "a.jsonl").write_text("\n".join(rows) + "\n")
    spec = spec_lib.spec_from_dict({"features": {
        "x": {"source": "x", "layer": "Normalization"},
        "v": {"source": "v", "layer": "Normalization", "shape": [2]}}})
    manifest = run_analyze(spec, [str(tmp_path / "a.jsonl")], "jsonl", str(tmp_path / "out"))
    arts = prepro.load(str(tmp_path / "out"))
    assert manifest["features"]["x"]["figures"]["missing"] == 1
    assert arts.moments("x")[0].tolist() == [1.75]
    assert arts.moments("v")[0].tolist() == [2.0, 3.25]
    assert arts.moments("v")[1].tolist() == [1.0, 1.5625]


def test_null_inside_a_list_counts_as_nan(tmp_path):
    """A null element of a list value is NaN: Normalization skips the row, Discretization
    drops the element; both count it under `nan`."""
    rows = ['{"v": [1.0, null, 3.0]}', '{"v": [2.0, 4.0, 6.0]}', '{"v": [0.0, 8.0, 9.0]}']
    (tmp_path / "a.jsonl").write_text("\n".join(rows) + "\n")
    spec = spec_lib.spec_from_dict({"features": {
        "norm": {"source": "v", "layer": "Normalization", "shape": [3]},
        "bins": {"source": "v", "layer": "Discretization", "shape": [3], "config": {"num_bins": 2},
                 "quantiles": "exact"}}})
    manifest = run_analyze(spec, [str(tmp_path / "a.jsonl")], "jsonl", str(tmp_path / "out"))
    arts = prepro.load(str(tmp_path / "out"))
    assert manifest["features"]["norm"]["figures"]["nan"] == 1
    assert arts.moments("norm")[0].tolist() == [1.0, 6.0, 7.5]       # rows 2 and 3 only
    assert manifest["features"]["bins"]["figures"]["values"] == 8
    assert arts.bin_boundaries("bins") == [3.0]  # median of [0, 1, 2, 3, 4, 6, 8, 9]: 4th smallest
