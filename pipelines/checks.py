"""Features with nothing to learn (Hashing, CategoryEncoding): the job checks and counts
their input, so a value the layer would fail on stops the job, naming its row, rather
than a training step later; the artifact records the layer so one place builds a model.

Policy: as for vocabulary features (pipelines/extract.py): a null is skipped and counted
`missing`, a list contributes each element; a CategoryEncoding value outside
[0, num_tokens) is an error (Keras raises on it at call time).
"""

from typing import Tuple

import numpy as np

from pipelines.errors import InputError
from pipelines.extract import Tally, feature_values
from pipelines.io import Batch
from prepro import spec as spec_lib
from prepro.spec import FeatureSpec


def checked_tally(batch: Batch, feature: FeatureSpec) -> Tally:
    values, rows, tally = feature_values(batch, feature)
    if feature.layer == "CategoryEncoding":
        num_tokens = feature.options["num_tokens"]
        ints = values.to_numpy(zero_copy_only=False)
        outside = (ints < 0) | (ints >= num_tokens)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise InputError(f"value {int(ints[i])} is outside [0, num_tokens={num_tokens}); "
                             f"CategoryEncoding fails on it (map categories with IntegerLookup)",
                             path=batch.path, row=int(rows[i]), feature=feature.name)
    return tally


def finalize_stateless(item: Tuple[str, Tally], spec: spec_lib.Spec):
    """A checked feature's manifest entry: its spec, no state, its figures."""
    name, tally = item
    feature = spec.features[name]
    if tally.values == 0:
        raise InputError(f"no values: {tally.rows} rows, {tally.missing} missing", feature=name)
    figures = {"rows": tally.rows, "values": tally.values, "missing": tally.missing,
               "invalid_utf8_replaced": tally.invalid_utf8_replaced,
               "invalid_utf8_skipped": tally.invalid_utf8_skipped}
    return name, {**feature.to_dict(), "state": {}, "figures": figures}, {}
