"""A feature's state files: their names, how the job writes each one (with its manifest
entry) and how `prepro.load` reads it back, side by side, as Keras keeps a layer's
`save_assets` next to its `load_assets`. docs/artifact-format.md describes the files.

    <feature>/vocabulary.txt            one token per line, rank order (prepro.vocab)
    <feature>/document_frequencies.txt  one decimal integer per learned token
    <feature>/mean.txt, variance.txt    one float64 per line, row-major over the kept axes
    <feature>/boundaries.txt            one float32-exact float per line, sorted
    <feature>/counts.txt                (profile) one decimal integer per learned token: its count
    <feature>/count_distribution.txt    (profile) "<count> <tokens>" lines: how many distinct
                                        tokens occur that many times, counts descending
    <feature>/quantiles.txt             (profile, Discretization) QUANTILE_STEPS + 1 float64
                                        lines: the values at cumulative weight 0, 1/steps, ..., 1
    <feature>/token_state.arrow         (--keep-state) every distinct token with its counts,
                                        sorted by token: Arrow IPC file, TOKEN_STATE_BATCH rows
                                        per record batch, so its bytes depend only on its rows
    <feature>/moments_state.arrow       (--keep-state, Normalization) the exact sums per position
    <feature>/quantile_state.arrow      (--keep-state, exact Discretization) every distinct
                                        (value, weight) with its multiplicity, sorted
    <feature>/quantile_sketch.pb        (--keep-state, sketch Discretization) tfx-bsl's own
                                        serialization of the merged sketch
    golden/candidates.json              (--keep-state) the golden-row candidates, with keys

Readers take bytes that passed their checksum (`artifacts.StateFiles.read`) and still
trust nothing: a malformed file is a ValueError naming what is wrong, which the caller
reports as the artifact's error naming the file.
"""

import json
import math
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prepro import artifacts, fs, vocab
from prepro.stats.counts import WEIGHT_TYPE

VOCABULARY = "vocabulary.txt"
DOCUMENT_FREQUENCIES = "document_frequencies.txt"
MEAN = "mean.txt"
VARIANCE = "variance.txt"
BOUNDARIES = "boundaries.txt"
COUNTS = "counts.txt"
COUNT_DISTRIBUTION = "count_distribution.txt"
QUANTILE_PROFILE = "quantiles.txt"
FLOAT32_MAX = float(np.finfo(np.float32).max)  # a larger value is infinite where Keras computes
QUANTILE_STEPS = 1000  # a profile step (0.1% of the weight) as fine as the default rank error
TOKEN_STATE = "token_state.arrow"
TOKEN_STATE_BATCH = 65536
MOMENTS_STATE = "moments_state.arrow"
QUANTILE_STATE = "quantile_state.arrow"
QUANTILE_SKETCH = "quantile_sketch.pb"
GOLDEN_CANDIDATES = "golden/candidates.json"
MOMENTS_STATE_SCHEMA = pa.schema([pa.field("sum", pa.string(), nullable=False),
                                  pa.field("square_sum", pa.string(), nullable=False)])
QUANTILE_STATE_SCHEMA = pa.schema([pa.field("value", pa.float64(), nullable=False),
                                   pa.field("weight", pa.float64(), nullable=False),
                                   pa.field("count", pa.int64(), nullable=False)])


def token_state_schema(token_type: pa.DataType, weighted: bool = False) -> pa.Schema:
    """(token, count, doc_count[, weight]): binary tokens (UTF-8 bytes) or int64
    (IntegerLookup). `doc_count` is 0 throughout unless the feature counts document
    frequencies; `weight`, a weighted feature's sum of weights (prepro.stats.counts)."""
    fields = [pa.field("token", token_type, nullable=False), pa.field("count", pa.int64(), nullable=False),
              pa.field("doc_count", pa.int64(), nullable=False)]
    return pa.schema(fields + ([pa.field("weight", WEIGHT_TYPE, nullable=False)] if weighted else []))


KEPT_STATE_KEYS = ("token_state_file", "moments_state_file", "quantile_state_file", "quantile_sketch_file")


def kept_state_files(manifest: Dict[str, Any]) -> List[str]:
    """The relative paths of an artifact's kept state (`--keep-state`), golden candidates included."""
    paths = [entry["state"][key] for _, entry in sorted(manifest["features"].items())
             for key in KEPT_STATE_KEYS if key in entry["state"]]
    if "kept_state" in manifest:
        paths.append(manifest["kept_state"]["golden_candidates_file"])
    return paths


def relpath(feature: str, file: str) -> str:
    """A state file's path inside the state directory: the feature's folder, the file."""
    return f"{feature}/{file}"


# --------------------------------------------------------------------------- writing

class HashedFile:
    """A file being written, with its manifest entry (size and SHA-256) computed on the way."""

    def __init__(self, out):
        self._out = out
        self._digest = artifacts.Digest()

    def write(self, data) -> int:
        self._out.write(data)
        self._digest.update(data)
        return len(data)

    # What pyarrow asks of a Python sink it writes Arrow IPC into.
    closed = False

    def flush(self) -> None:
        pass

    def file_entry(self) -> Dict[str, Any]:
        return self._digest.entry()


class StateWriter:
    """Writes one feature's whole state files into `state_dir` and collects their
    manifest entries (`files`). `after_write` runs after each file (the job's failpoints)."""

    def __init__(self, state_dir: str, feature: str, after_write: Callable[[], None] = lambda: None):
        self._state_dir, self._feature, self._after_write = state_dir, feature, after_write
        self.files: Dict[str, Dict[str, Any]] = {}

    def write(self, file: str, data: bytes) -> str:
        path = relpath(self._feature, file)
        fs.write_bytes(fs.join(self._state_dir, path), data)
        self._after_write()
        self.files[path] = artifacts.file_entry(data)
        return path

    def open(self, file: str):
        """(relpath, a writable stream) for a file written in pieces; enter the stream."""
        path = relpath(self._feature, file)
        return path, fs.open_write(fs.join(self._state_dir, path))


class TokenStateWriter:
    """Writes a feature's kept token state from tables already sorted by token, cut into
    record batches of exactly TOKEN_STATE_BATCH rows (the last one shorter), whatever
    tables it is handed: the same rows give the same bytes for any shard count."""

    def __init__(self, out, token_type: pa.DataType, weighted: bool = False):
        self._file = HashedFile(out)
        self._schema = token_state_schema(token_type, weighted)
        self._writer = pa.ipc.new_file(self._file, self._schema)
        self._pending: List[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        self._pending.append(table.select(self._schema.names).cast(self._schema))
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= TOKEN_STATE_BATCH:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        table = pa.concat_tables(self._pending).combine_chunks()
        whole = table.num_rows if final else table.num_rows - table.num_rows % TOKEN_STATE_BATCH
        for start in range(0, whole, TOKEN_STATE_BATCH):
            self._writer.write_batch(_one_batch(table.slice(start, min(TOKEN_STATE_BATCH, whole - start))))
        rest = table.slice(whole)
        self._pending, self._pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)

    def close(self) -> Dict[str, Any]:
        """Ends the file; its manifest entry."""
        if self._pending_rows:
            self._flush(final=True)
        self._writer.close()
        return self._file.file_entry()


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    return pa.record_batch([column.combine_chunks() for column in table.columns], schema=table.schema)


def arrow_file_bytes(table: pa.Table) -> bytes:
    """A small state table as an Arrow IPC file of TOKEN_STATE_BATCH-row batches."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        for start in range(0, table.num_rows, TOKEN_STATE_BATCH):
            writer.write_batch(_one_batch(table.slice(start, TOKEN_STATE_BATCH)))
    return sink.getvalue().to_pybytes()


def moments_state_bytes(sums: List[int], square_sums: List[int]) -> bytes:
    """The exact sums of a Normalization (prepro.stats.numeric.Moments: sum(x) * 2**1075
    and sum(x*x) * 2**2150 per position) as decimal integers, which no float rounds."""
    return arrow_file_bytes(pa.table([pa.array([str(v) for v in sums], pa.string()),
                                      pa.array([str(v) for v in square_sums], pa.string())],
                                     schema=MOMENTS_STATE_SCHEMA))


def quantile_state_bytes(values: np.ndarray, weights: np.ndarray, counts: np.ndarray) -> bytes:
    return arrow_file_bytes(pa.table([pa.array(values, pa.float64()), pa.array(weights, pa.float64()),
                                      pa.array(counts, pa.int64())], schema=QUANTILE_STATE_SCHEMA))


def count_distribution_bytes(counts: np.ndarray, tokens: np.ndarray) -> bytes:
    """`tokens[i]` distinct tokens occur `counts[i]` times; counts distinct, descending."""
    return "".join(f"{int(c)} {int(t)}\n" for c, t in zip(counts, tokens)).encode("ascii")


def golden_candidates_bytes(candidates: List[tuple]) -> bytes:
    return json.dumps([[int(key), text] for key, text in candidates], ensure_ascii=True).encode("ascii")


def float_lines(values: Iterable[float]) -> bytes:
    """Python's shortest round-trip repr of each value, one per line: exact float64."""
    return "".join(f"{float(v)!r}\n" for v in values).encode("ascii")


# --------------------------------------------------------------------------- reading

def read_floats(data: bytes, expected: int, field: str) -> np.ndarray:
    values = np.array(data.split(), np.float64)
    require_count(values, expected, "values", field)
    return values


def read_boundaries(data: bytes, expected: int) -> List[float]:
    boundaries = [float(v) for v in data.split()]
    require_count(boundaries, expected, "boundaries", "num_boundaries")
    if any(math.isnan(b) for b in boundaries) or boundaries != sorted(boundaries):
        raise ValueError("boundaries must be sorted numbers")
    return boundaries


def read_document_frequencies(data: bytes, expected: int) -> np.ndarray:
    frequencies = np.array(data.split(), dtype=np.int64)
    require_count(frequencies, expected, "frequencies", "vocabulary_size")
    if (frequencies < 0).any():
        raise ValueError("negative document frequency")
    return frequencies


def read_counts(data: bytes, expected: int, distribution: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> np.ndarray:
    """A learned token's count per line, in rank order; with the feature's count
    `distribution`, each count must be one it holds, for no more tokens than it says."""
    counts = np.array(data.split(), dtype=np.int64)
    require_count(counts, expected, "counts", "vocabulary_size")
    if (counts < 1).any() or (counts > artifacts.MAX_COUNT).any():
        raise ValueError(f"a count below 1 or above {artifacts.MAX_COUNT}")
    if distribution is not None:
        values, tokens = np.unique(counts, return_counts=True)
        known, known_tokens = distribution[0][::-1], distribution[1][::-1]  # ascending
        at = np.minimum(np.searchsorted(known, values), max(len(known) - 1, 0))
        if len(values) and (not len(known) or (known[at] != values).any() or (known_tokens[at] < tokens).any()):
            raise ValueError("counts the count distribution does not hold (a count it lacks, or more tokens "
                             "with a count than it says)")
    return counts


def read_count_distribution(data: bytes, expected: int, distinct: Optional[int] = None,
                            occurrences: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(counts, tokens): counts distinct and descending, both >= 1 and at most MAX_COUNT;
    when given, the tokens sum to `distinct` and their occurrences to `occurrences`."""
    pairs = np.array(data.split(), dtype=np.int64)
    if len(pairs) % 2:
        raise ValueError("a line that is not '<count> <tokens>'")
    counts, tokens = pairs[0::2], pairs[1::2]
    require_count(counts, expected, "lines", "count_distribution_rows")
    if (counts < 1).any() or (tokens < 1).any() or (np.diff(counts) >= 0).any():
        raise ValueError("counts must be distinct, descending and >= 1, tokens >= 1")
    # In float64 first: the exact int64 sums below cannot overflow once these are bounded.
    if tokens.astype(np.float64).sum() > 2 * artifacts.MAX_COUNT or \
            (counts.astype(np.float64) * tokens).sum() > 2 * artifacts.MAX_COUNT:
        raise ValueError(f"more than {artifacts.MAX_COUNT} tokens or occurrences")
    found = int(tokens.sum()), int((counts * tokens).sum())
    if distinct is not None and found != (distinct, occurrences):
        raise ValueError(f"{found[0]} distinct tokens with {found[1]} occurrences, but the manifest's figures "
                         f"say {distinct} (distinct_tokens) with {occurrences} (tokens_seen - special_tokens_seen)")
    return counts, tokens


def read_quantile_profile(data: bytes, steps: int) -> np.ndarray:
    values = np.array(data.split(), np.float64)
    require_count(values, steps + 1, "values", "quantile_steps (+1)")
    finite = values[np.isfinite(values)]
    if np.isnan(values).any() or (values[1:] < values[:-1]).any() or (np.abs(finite) > FLOAT32_MAX).any():
        raise ValueError("quantiles must be sorted numbers, finite ones within float32's range")
    return values


def read_vocabulary(data: bytes, integer: bool, exceptions: Iterable, expected: int) -> List[Any]:
    """The learned tokens in rank order: the file's lines with the manifest's exceptions
    put back at their ranks (see prepro.vocab)."""
    tokens = vocab.read_vocabulary_file(data, integer)
    tokens = vocab.merge_exceptions(tokens, [(rank, vocab.token_from_json(t)) for rank, t in exceptions])
    require_count(tokens, expected, "tokens (exceptions included)", "vocabulary_size")
    return tokens


def read_token_state(data: bytes, integer: bool, expected: int, weighted: bool = False) -> pa.Table:
    """The kept token state as one table, checked: the schema the writer writes, tokens
    distinct and sorted, counts positive and document counts within them."""
    try:
        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"not an Arrow IPC file: {e}") from None
    _require_schema(table.schema, token_state_schema(pa.int64() if integer else pa.binary(), weighted))
    require_count(range(table.num_rows), expected, "tokens", "token_state_rows")
    check_token_rows(table)
    return table


def check_token_rows(table: pa.Table, after=None) -> None:
    """Rows of a token state (all of it, or a slice whose previous token is `after`):
    no nulls, tokens distinct and sorted, counts positive, document counts within them."""
    if any(column.null_count for column in table.columns):
        raise ValueError("a null token or count")
    tokens = table["token"].combine_chunks()
    if table.num_rows > 1 and not pc.all(pc.less(tokens[:-1], tokens[1:])).as_py():
        raise ValueError("tokens are not distinct and sorted")
    if after is not None and table.num_rows and not tokens[0].as_py() > after:
        raise ValueError("tokens are not distinct and sorted (across record batches)")
    counts, doc_counts = table["count"], table["doc_count"]
    if table.num_rows and (pc.min(counts).as_py() < 1 or pc.min(doc_counts).as_py() < 0
                           or pc.any(pc.greater(doc_counts, counts)).as_py()):
        raise ValueError("a count below 1, or a document count negative or above its count")
    if table.num_rows and pc.max(counts).as_py() > artifacts.MAX_COUNT:  # merged sums stay far from int64's end
        raise ValueError(f"a count above {artifacts.MAX_COUNT}")
    if "weight" in table.column_names and table.num_rows and pc.min(table["weight"]).as_py() < 0:
        raise ValueError("a negative weight")


def token_state_batches(f, integer: bool, first: int, stop: int, expected_batches: int,
                        weighted: bool = False) -> Iterator[pa.Table]:
    """Record batches [first, stop) of a kept token state open in `f` (a seekable file
    whose checksum was verified), each checked (`check_token_rows`, the batch before
    the first included in the order check). The file must hold `expected_batches`."""
    try:
        reader = pa.ipc.open_file(f)
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"not an Arrow IPC file: {e}") from None
    _require_schema(reader.schema, token_state_schema(pa.int64() if integer else pa.binary(), weighted))
    if reader.num_record_batches != expected_batches:
        raise ValueError(f"{reader.num_record_batches} record batches, but token_state_rows needs "
                         f"{expected_batches} of {TOKEN_STATE_BATCH} rows")
    after = reader.get_batch(first - 1)["token"][-1].as_py() if first > 0 else None
    for i in range(first, stop):
        batch = pa.Table.from_batches([reader.get_batch(i)])
        if batch.num_rows != TOKEN_STATE_BATCH and i != expected_batches - 1:
            raise ValueError(f"record batch {i} holds {batch.num_rows} rows, not {TOKEN_STATE_BATCH}")
        check_token_rows(batch, after)
        after = batch["token"][-1].as_py() if batch.num_rows else after
        yield batch


def _read_arrow(data: bytes, schema: pa.Schema, expected: int, field: str) -> pa.Table:
    try:
        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"not an Arrow IPC file: {e}") from None
    _require_schema(table.schema, schema)
    require_count(range(table.num_rows), expected, "rows", field)
    if any(column.null_count for column in table.columns):
        raise ValueError("a null value")
    return table


def _require_schema(found: pa.Schema, wanted: pa.Schema) -> None:
    # Names and types; nullability aside (a null is refused by the caller, whatever the field says).
    if found.names != wanted.names or found.types != wanted.types:
        raise ValueError(f"columns {found.names} of types {[str(t) for t in found.types]}, "
                         f"not {wanted.names} of {[str(t) for t in wanted.types]}")


_DECIMAL = r"^-?(0|[1-9][0-9]{0,999})$"


def read_moments_state(data: bytes, width: int) -> Tuple[List[int], List[int]]:
    """(sums, square sums) per position, as exact integers; square sums are >= 0."""
    table = _read_arrow(data, MOMENTS_STATE_SCHEMA, width, "shape")
    if any(pc.all(pc.match_substring_regex(table[c], _DECIMAL)).as_py() is False for c in table.column_names):
        raise ValueError("a sum that is not a decimal integer")
    sums = [int(v) for v in table["sum"].to_pylist()]
    square_sums = [int(v) for v in table["square_sum"].to_pylist()]
    if any(v < 0 for v in square_sums):
        raise ValueError("a negative sum of squares")
    return sums, square_sums


def read_quantile_state(data: bytes, expected: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, weights, counts): distinct pairs sorted by value then weight, values
    not NaN, weights finite and > 0, counts >= 1."""
    table = _read_arrow(data, QUANTILE_STATE_SCHEMA, expected, "quantile_state_rows")
    values, weights, counts = (table[c].to_numpy() for c in QUANTILE_STATE_SCHEMA.names)
    if np.isnan(values).any() or not np.isfinite(weights).all() or (weights <= 0).any() or (counts < 1).any():
        raise ValueError("a NaN value, a weight not finite and > 0, or a count below 1")
    if len(values) > 1 and not np.all((values[:-1] < values[1:])
                                      | ((values[:-1] == values[1:]) & (weights[:-1] < weights[1:]))):
        raise ValueError("(value, weight) pairs are not distinct and sorted")
    return values, weights, counts


def read_golden_candidates(data: bytes, limit: int) -> List[Tuple[int, str]]:
    """[(key, canonical JSON of a row)]: distinct, sorted, at most `limit`."""
    try:
        pairs = json.loads(data)
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and type(p[0]) is int and 0 <= p[0] < 2 ** 64
            and isinstance(p[1], str) for p in pairs):
        raise ValueError("not a list of [key, row] pairs (keys: 64-bit unsigned integers)")
    out = [(key, text) for key, text in pairs]
    if out != sorted(set(out)) or len(out) > limit:
        raise ValueError(f"candidates not distinct and sorted, or more than {limit}")
    for _, text in out:
        if not isinstance(artifacts.parse_json(text.encode("utf-8"), "a golden candidate"), dict):
            raise ValueError("a candidate row that is not a JSON object")
    return out


def require_count(values, expected: int, what: str, field: str) -> None:
    if len(values) != expected:
        raise ValueError(f"{len(values)} {what}, but the manifest's {field} says {expected}")
