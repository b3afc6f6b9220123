"""A numeric feature's merged statistics -> its state files and manifest entry.

Normalization: `mean.txt` and `variance.txt`, one float64 per line (Python's shortest
round-trip repr), row-major over the kept axes. Discretization: `boundaries.txt`, the
float32-exact boundaries, one per line. See docs/artifact-format.md.
"""

from typing import Iterable, Tuple

import numpy as np

from pipelines import failpoints
from pipelines.errors import InputError
from prepro import spec as spec_lib, state_files
from prepro.state_files import float_lines
from prepro.stats.numeric import ExactQuantiles, NumericStats, merge_in_order


def finalize_numeric(item: Tuple[str, Iterable], spec: spec_lib.Spec, state_dir: str, keep_state: bool = False):
    """Merges a feature's parts and writes its state files (with `keep_state`, also its
    mergeable state: the exact sums, the exact values or the sketch)."""
    name, parts = item
    feature = spec.features[name]
    stats: NumericStats = merge_in_order(list(parts))
    c = stats.counters
    figures = {"rows": c.rows, "values": c.values, "missing": c.missing, "nan": c.nan,
               "infinite": c.infinite, "zero_weight": c.zero_weight}
    if c.values == 0 and not (feature.layer == "Discretization" and feature.options["bin_boundaries"]):
        raise InputError(f"no values to learn from: {c.rows} rows, {c.missing} missing, {c.nan} NaN, "
                         f"{c.zero_weight} with weight 0", feature=name)
    writer = state_files.StateWriter(state_dir, name, after_write=lambda: failpoints.reach("state"))
    if feature.layer == "Normalization":
        kept = spec_lib.normalization_axes(feature)
        shape = [(1, *feature.element_shape)[a] for a in kept]
        moments = stats.moments
        state = {"mean_file": writer.write(state_files.MEAN, float_lines(moments.mean)),
                 "variance_file": writer.write(state_files.VARIANCE, float_lines(moments.variance)),
                 "shape": shape, "count": int(moments.count)}
        if keep_state:
            state["moments_state_file"] = writer.write(
                state_files.MOMENTS_STATE, state_files.moments_state_bytes(moments.sums, moments.square_sums))
    else:
        num_bins = feature.options["num_bins"]
        if num_bins is None:  # explicit boundaries: nothing to learn, figures only
            state = {"boundaries": "config"}
        else:
            exact = isinstance(stats.quantiles, ExactQuantiles)
            kept = _kept_quantiles(stats.quantiles, writer) if keep_state else {}  # before boundaries: they
            boundaries = stats.quantiles.boundaries(num_bins) if num_bins > 1 else np.zeros(0)  # end a sketch
            state = {"boundaries_file": writer.write(state_files.BOUNDARIES, float_lines(boundaries)),
                     "num_boundaries": int(len(boundaries)),
                     "distinct_boundaries": int(len(np.unique(boundaries))),
                     "quantiles": "exact" if exact else "sketch",
                     "rank_error_bound": 0.0 if exact else feature.rank_error, **kept}
    return name, {**feature.to_dict(), "state": state, "figures": figures}, writer.files


def _kept_quantiles(quantiles, writer: state_files.StateWriter) -> dict:
    if isinstance(quantiles, ExactQuantiles):
        values, weights, counts = quantiles.distinct()
        return {"quantile_state_file": writer.write(state_files.QUANTILE_STATE,
                                                    state_files.quantile_state_bytes(values, weights, counts)),
                "quantile_state_rows": int(len(values))}
    return {"quantile_sketch_file": writer.write(state_files.QUANTILE_SKETCH, quantiles.to_bytes())}
