"""Golden rows: a few raw input rows, chosen the same way on every runner, that the
artifacts carry with their expected outputs (see prepro.golden).

Each read task offers the first rows of its first batch in which every source column
holds a value that JSON can carry (a list only where a shape is declared); the job keeps
the `n` with the smallest (task index, row), so the choice depends only on the sorted
inputs.
"""

from typing import Dict, List, Tuple

from pipelines.io import Batch
from prepro.spec import Spec

ROWS_PER_TASK = 64


def candidate_rows(batch: Batch, task_index: int, columns: Dict[str, str], spec: Spec,
                   limit: int) -> List[Tuple]:
    """((task index, row), {column: value}) for the batch's first complete rows: every
    source value present, and a list only where a numeric feature declares a shape."""
    shaped = {f.source for f in spec.features.values() if f.shape}
    head = batch.table.slice(0, max(ROWS_PER_TASK, limit)).select(sorted(columns)).to_pylist()
    out = []
    for offset, raw in enumerate(head):
        row = {c: _plain(raw[c], columns[c]) for c in sorted(columns)}
        if all(v is not None and isinstance(v, list) == (c in shaped) for c, v in row.items()):
            out.append(((task_index, batch.first_row + offset), row))
        if len(out) == limit:
            break
    return out


def _plain(value, kind: str):
    """A raw value as JSON carries it, or None if it is missing or cannot be carried."""
    if isinstance(value, list):
        items = [_plain(v, kind) for v in value]
        return None if not items or any(v is None for v in items) else items
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if kind == "float":
        try:
            return float(value)
        except ValueError:
            return None
    if kind == "int" and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    if isinstance(value, str) and value == "" and kind != "string":
        return None
    return value
