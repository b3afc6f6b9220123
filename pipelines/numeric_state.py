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


def finalize_numeric(item: Tuple[str, Iterable], spec: spec_lib.Spec, state_dir: str):
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
    else:
        num_bins = feature.options["num_bins"]
        if num_bins is None:  # explicit boundaries: nothing to learn, figures only
            state = {"boundaries": "config"}
        else:
            boundaries = stats.quantiles.boundaries(num_bins) if num_bins > 1 else np.zeros(0)
            exact = isinstance(stats.quantiles, ExactQuantiles)
            state = {"boundaries_file": writer.write(state_files.BOUNDARIES, float_lines(boundaries)),
                     "num_boundaries": int(len(boundaries)),
                     "distinct_boundaries": int(len(np.unique(boundaries))),
                     "quantiles": "exact" if exact else "sketch",
                     "rank_error_bound": 0.0 if exact else feature.rank_error}
    return name, {**feature.to_dict(), "state": state, "figures": figures}, writer.files
