"""A feature's state files: their names, how the job writes each one (with its manifest
entry) and how `prepro.load` reads it back, side by side, as Keras keeps a layer's
`save_assets` next to its `load_assets`. docs/artifact-format.md describes the files.

    <feature>/vocabulary.txt            one token per line, rank order (prepro.vocab)
    <feature>/document_frequencies.txt  one decimal integer per learned token
    <feature>/mean.txt, variance.txt    one float64 per line, row-major over the kept axes
    <feature>/boundaries.txt            one float32-exact float per line, sorted
    <feature>/token_state.arrow         (--keep-state) every distinct token with its counts,
                                        sorted by token: Arrow IPC file, TOKEN_STATE_BATCH rows
                                        per record batch, so its bytes depend only on its rows

Readers take bytes that passed their checksum (`artifacts.StateFiles.read`) and still
trust nothing: a malformed file is a ValueError naming what is wrong, which the caller
reports as the artifact's error naming the file.
"""

import math
from typing import Any, Callable, Dict, Iterable, List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prepro import artifacts, fs, vocab

VOCABULARY = "vocabulary.txt"
DOCUMENT_FREQUENCIES = "document_frequencies.txt"
MEAN = "mean.txt"
VARIANCE = "variance.txt"
BOUNDARIES = "boundaries.txt"
TOKEN_STATE = "token_state.arrow"
TOKEN_STATE_BATCH = 65536


def token_state_schema(token_type: pa.DataType) -> pa.Schema:
    """(token, count, doc_count): binary tokens (UTF-8 bytes) or int64 (IntegerLookup).
    `doc_count` is 0 throughout unless the feature counts document frequencies."""
    return pa.schema([pa.field("token", token_type, nullable=False), pa.field("count", pa.int64(), nullable=False),
                      pa.field("doc_count", pa.int64(), nullable=False)])


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

    def __init__(self, out, token_type: pa.DataType):
        self._file = HashedFile(out)
        self._schema = token_state_schema(token_type)
        self._writer = pa.ipc.new_file(self._file, self._schema)
        self._pending: List[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        self._pending.append(table.select(["token", "count", "doc_count"]).cast(self._schema))
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


def read_vocabulary(data: bytes, integer: bool, exceptions: Iterable, expected: int) -> List[Any]:
    """The learned tokens in rank order: the file's lines with the manifest's exceptions
    put back at their ranks (see prepro.vocab)."""
    tokens = vocab.read_vocabulary_file(data, integer)
    tokens = vocab.merge_exceptions(tokens, [(rank, vocab.token_from_json(t)) for rank, t in exceptions])
    require_count(tokens, expected, "tokens (exceptions included)", "vocabulary_size")
    return tokens


def read_token_state(data: bytes, integer: bool, expected: int) -> pa.Table:
    """The kept token state as one table, checked: the schema the writer writes, tokens
    distinct and sorted, counts positive and document counts within them."""
    try:
        table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"not an Arrow IPC file: {e}") from None
    wanted = token_state_schema(pa.int64() if integer else pa.binary())
    # Names and types; nullability aside (a null is refused below, whatever the field says).
    if table.schema.names != wanted.names or table.schema.types != wanted.types:
        raise ValueError(f"columns {table.schema.names} of types {[str(t) for t in table.schema.types]}, "
                         f"not {wanted.names} of {[str(t) for t in wanted.types]}")
    require_count(range(table.num_rows), expected, "tokens", "token_state_rows")
    if any(column.null_count for column in table.columns):
        raise ValueError("a null token or count")
    tokens = table["token"].combine_chunks()
    if table.num_rows > 1 and not pc.all(pc.less(tokens[:-1], tokens[1:])).as_py():
        raise ValueError("tokens are not distinct and sorted")
    counts, doc_counts = table["count"], table["doc_count"]
    if table.num_rows and (pc.min(counts).as_py() < 1 or pc.min(doc_counts).as_py() < 0
                           or pc.any(pc.greater(doc_counts, counts)).as_py()):
        raise ValueError("a count below 1, or a document count negative or above its count")
    return table


def require_count(values, expected: int, what: str, field: str) -> None:
    if len(values) != expected:
        raise ValueError(f"{len(values)} {what}, but the manifest's {field} says {expected}")
