"""A PCollection's elements -> the Arrow batches the analyze job summarizes (`ToBatches`).

Elements may be:
- dicts (column -> value), e.g. `ReadFromBigQuery(output_type="PYTHON_DICT")` rows;
- Beam Rows and other schema'd elements: `beam.Row`, NamedTuples, dataclasses;
- `pyarrow.RecordBatch`es or `pyarrow.Table`s, summarized as the batches they are.
Python values become Arrow columns by the JSON Lines reader's rules
(`io._python_column`), so a dict gives what the same row in a JSON Lines file gives: an
absent key or None is a missing value, a list a list value. BigQuery's and NumPy's
other types first become what JSON would hold: BYTES stay bytes (for text features,
whose invalid_utf8 policy then decides), NUMERIC / BIGNUMERIC (Decimal) values are
floats for float features and integers for integer ones when integral, NumPy scalars
and arrays are Python numbers and lists, tuples are lists. Anything else is an
InputError naming the column and showing the value.
"""

import dataclasses
import decimal
import random
from typing import Dict, Iterator, List, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa

from pipelines import io as prepro_io
from pipelines.errors import InputError
from pipelines.io import ELEMENTS, Batch

MAX_BATCH_ROWS = prepro_io.BATCH_ROWS


class ToBatches(beam.PTransform):
    """Elements -> `io.Batch`es holding the columns in `columns` (column -> kind of
    values its features read). Rows are grouped with Beam's `BatchElements` (sizes
    adapt to the runner; the statistics never depend on them)."""

    def __init__(self, columns: Dict[str, str], max_batch_rows: int = MAX_BATCH_ROWS,
                 features_of: Optional[Dict[str, List[str]]] = None):
        """`features_of`: column -> the features reading it, named in errors."""
        super().__init__()
        self._columns, self._max_rows = dict(columns), max_batch_rows
        self._features_of = dict(features_of or {})

    def expand(self, elements):
        elements = elements | "GlobalWindow" >> beam.WindowInto(beam.window.GlobalWindows())
        if drops_finish_bundle_outputs(elements.pipeline):
            groups = (elements
                      | "KeyByGroup" >> beam.Map(lambda e: (random.randrange(DASK_GROUPS), e))
                      | "Group" >> beam.GroupByKey()
                      | "Chunk" >> beam.FlatMap(_chunks, self._max_rows))
        else:
            groups = elements | "BatchElements" >> beam.BatchElements(
                min_batch_size=min(256, self._max_rows), max_batch_size=self._max_rows, element_size_fn=_rows_in)
        return groups | "AsArrow" >> beam.FlatMap(to_batches, self._columns, self._features_of).with_output_types(Batch)


# Beam 2.77's DaskRunner collects a DoFn's outputs before it calls finish_bundle
# (runners/dask/transform_evaluator.py, apply_dofn_to_bundle), so what finish_bundle
# emits is lost: BatchElements would drop each bundle's last batch. There, elements are
# grouped by a GroupByKey on a random key instead (a shuffle of the rows).
DASK_GROUPS = 64


def drops_finish_bundle_outputs(pipeline) -> bool:
    return type(getattr(pipeline, "runner", None)).__name__ == "DaskRunner"


def _chunks(group, size: int):
    chunk = []
    for element in group[1]:
        chunk.append(element)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _rows_in(element) -> int:
    return element.num_rows if isinstance(element, (pa.RecordBatch, pa.Table)) else 1


def to_batches(elements: List, columns: Dict[str, str],
               features_of: Optional[Dict[str, List[str]]] = None) -> Iterator[Batch]:
    """A list of elements -> batches: consecutive row elements make one, each
    RecordBatch or Table is one."""
    try:
        yield from _batches(elements, columns)
    except InputError as e:
        raise e.naming_features(features_of or {}) from None


def _batches(elements: List, columns: Dict[str, str]) -> Iterator[Batch]:
    rows: List[Dict] = []
    for element in elements:
        if isinstance(element, (pa.RecordBatch, pa.Table)):
            if rows:
                yield _row_batch(rows, columns)
                rows = []
            yield _arrow_batch(element, columns)
        else:
            rows.append(as_dict(element))
    if rows:
        yield _row_batch(rows, columns)


def as_dict(element) -> Dict:
    """A row element as column -> value."""
    if isinstance(element, dict):
        return element
    if hasattr(element, "_asdict"):  # beam.Row, NamedTuple
        return element._asdict()
    if dataclasses.is_dataclass(element) and not isinstance(element, type):
        return {f.name: getattr(element, f.name) for f in dataclasses.fields(element)}
    raise InputError(f"AnalyzeFeatures takes elements that are dicts, beam.Rows, NamedTuples, dataclasses or "
                     f"pyarrow RecordBatches, not {type(element).__module__}.{type(element).__qualname__} "
                     f"({prepro_io._short(element)})", path=ELEMENTS)


def _row_batch(rows: List[Dict], columns: Dict[str, str]) -> Batch:
    table = {}
    for name, kind in columns.items():
        values = [_plain_value(row.get(name), kind) for row in rows]
        table[name] = prepro_io._python_column(values, kind, name, ELEMENTS, 1)
    return Batch(ELEMENTS, 1, pa.table(table))


def _arrow_batch(element, columns: Dict[str, str]) -> Batch:
    table = pa.Table.from_batches([element]) if isinstance(element, pa.RecordBatch) else element
    prepro_io._require_columns(columns, table.schema.names, ELEMENTS, "RecordBatch schema")
    return Batch(ELEMENTS, 1, table.select(sorted(columns)))


def _plain_value(value, kind: str):
    """A BigQuery / NumPy / Beam value as JSON would hold it (see the module's docstring)."""
    if isinstance(value, (list, tuple)):
        return [_plain_value(v, kind) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain_value(v, kind) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, decimal.Decimal):
        if kind == "float":
            return float(value)
        if kind in ("int", "hashable") and value.is_finite() and value == value.to_integral_value():
            return int(value)
    return value
