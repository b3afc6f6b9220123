"""Keras `adapt()` on a tf.data.Dataset for the numeric workload, then accuracy of both
adapt()'s and prepro's state against the exact truth, in one fresh process.

    python -m bench.numeric_adapt_job --data DIR --num-bins 100 --result out.json [--artifacts DIR]

What a user with data too big for one array does: one `Dataset` of float32 batches
(`--batch`, default 4,096) per layer, `Discretization(num_bins).adapt(ds)` for each column
and `Normalization().adapt(ds)` on the 8 columns stacked. Only the adapt() calls are
timed (Keras imported and the Parquet files read before). Then, for each column, the
worst rank error of adapt()'s and of prepro's boundaries against the exact quantiles
of the same float32 values, and the largest relative error of each Normalization
mean/variance against float64 two-pass moments.
"""

import argparse
import glob
import json
import os
import time

from bench.adapt_job import maxrss_mb
from bench.numeric_data import COLUMNS, read_columns


def spec_features(num_bins: int) -> dict:
    """The prepro spec for the workload (the same layers adapt() gets here)."""
    features = {f"{c}_bins": {"source": c, "layer": "Discretization", "config": {"num_bins": num_bins}}
                for c in COLUMNS}
    features["all_normalization"] = {"source": list(COLUMNS), "layer": "Normalization"}
    return features


def adapt_all(columns: dict, num_bins: int, batch: int):
    import keras
    import numpy as np
    import tensorflow as tf
    layers, seconds = {}, {}
    for c in COLUMNS:
        ds = tf.data.Dataset.from_tensor_slices(columns[c].astype(np.float32)).batch(batch)
        layers[c] = keras.layers.Discretization(num_bins=num_bins)
        start = time.perf_counter()
        layers[c].adapt(ds)
        seconds[f"{c}_bins"] = time.perf_counter() - start
    stacked = np.stack([columns[c] for c in COLUMNS], axis=-1).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices(stacked).batch(batch)
    layers["all_normalization"] = keras.layers.Normalization()
    start = time.perf_counter()
    layers["all_normalization"].adapt(ds)
    seconds["all_normalization"] = time.perf_counter() - start
    return layers, seconds


def accuracy(columns: dict, layers: dict, num_bins: int, artifacts: str = None) -> dict:
    """Worst rank errors (adapt, prepro) per column; worst relative moment errors."""
    import numpy as np
    from prepro.stats.numeric import rank_error
    arts = None
    if artifacts:
        import prepro
        arts = prepro.load(artifacts)
    out = {"rank_error": {}, "moments_relative_error": {}}
    for c in COLUMNS:
        entry = {"adapt": rank_error(columns[c], layers[c].bin_boundaries, num_bins)}
        if arts:
            entry["prepro"] = rank_error(columns[c], arts.bin_boundaries(f"{c}_bins"), num_bins)
            entry["prepro_bound"] = arts.manifest["features"][f"{c}_bins"]["state"]["rank_error_bound"]
        out["rank_error"][c] = entry
    stacked = np.stack([columns[c] for c in COLUMNS], axis=-1)
    mean = stacked.mean(axis=0)
    truth = {"mean": mean, "variance": ((stacked - mean) ** 2).mean(axis=0)}
    norm = layers["all_normalization"]
    candidates = {"adapt": {"mean": np.asarray(norm.mean).reshape(-1), "variance": np.asarray(norm.variance).reshape(-1)}}
    if arts:
        m, v = arts.moments("all_normalization")
        candidates["prepro"] = {"mean": m.reshape(-1), "variance": v.reshape(-1)}
    for tool, moments in candidates.items():
        out["moments_relative_error"][tool] = {
            key: float(np.max(np.abs(moments[key] - truth[key]) / np.abs(truth[key]))) for key in truth}
    worst = {tool: max(e[tool] for e in out["rank_error"].values())
             for tool in ("adapt", "prepro") if all(tool in e for e in out["rank_error"].values())}
    out["worst_rank_error"] = worst
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="directory of the workload's Parquet files")
    parser.add_argument("--num-bins", type=int, default=100)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--result", required=True)
    parser.add_argument("--artifacts", help="prepro artifacts to measure as well")
    args = parser.parse_args(argv)
    import keras
    if not keras.__version__.startswith("3."):
        raise SystemExit(f"expected Keras 3, got {keras.__version__}")
    columns = read_columns(sorted(glob.glob(os.path.join(args.data, "*.parquet"))))
    layers, seconds = adapt_all(columns, args.num_bins, args.batch)
    result = {"adapt_s": sum(seconds.values()), "adapt_s_per_layer": seconds,
              "peak_after_adapt_mb": maxrss_mb(), "rows": len(columns[COLUMNS[0]]), "batch": args.batch,
              "keras_version": keras.__version__}
    result["accuracy"] = accuracy(columns, layers, args.num_bins, args.artifacts)
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
