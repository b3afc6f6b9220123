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
            profile = _profile(stats, writer)
            state = {"boundaries_file": writer.write(state_files.BOUNDARIES, float_lines(boundaries)),
                     "num_boundaries": int(len(boundaries)),
                     "distinct_boundaries": int(len(np.unique(boundaries))),
                     "quantiles": "exact" if exact else "sketch",
                     "rank_error_bound": 0.0 if exact else feature.rank_error, **kept}
            if keep_state:
                state["moments_state_file"] = writer.write(state_files.MOMENTS_STATE, state_files.moments_state_bytes(
                    stats.moments.sums, stats.moments.square_sums))
            return name, {**feature.to_dict(), "state": state, "figures": figures, "profile": profile}, writer.files
    return name, {**feature.to_dict(), "state": state, "figures": figures}, writer.files


def _profile(stats: NumericStats, writer: state_files.StateWriter) -> dict:
    """What the report and `prepro diff` read of a learned Discretization: the values at
    every 1/QUANTILE_STEPS of the weight (the same sketch or sort as the boundaries, so
    within the same rank error), and the moments of the finite values."""
    steps, moments = state_files.QUANTILE_STEPS, stats.moments
    quantiles = stats.quantiles.profile(steps)
    return {"quantiles_file": writer.write(state_files.QUANTILE_PROFILE, float_lines(quantiles)),
            "quantile_steps": steps,
            "moments": {"count": int(moments.count),
                        "mean": float(moments.mean[0]) if moments.count else None,
                        "variance": float(moments.variance[0]) if moments.count else None}}


def _kept_quantiles(quantiles, writer: state_files.StateWriter) -> dict:
    if isinstance(quantiles, ExactQuantiles):
        values, weights, counts = quantiles.distinct()
        return {"quantile_state_file": writer.write(state_files.QUANTILE_STATE,
                                                    state_files.quantile_state_bytes(values, weights, counts)),
                "quantile_state_rows": int(len(values))}
    return {"quantile_sketch_file": writer.write(state_files.QUANTILE_SKETCH, quantiles.to_bytes())}
