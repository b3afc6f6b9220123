"""Input files -> Arrow record batches, with each batch's file and first row.

Formats: text (one row per line, column `text`), csv (header row), jsonl, parquet and
tfrecord (tf.train.Example). Files are opened through Beam's FileSystems, so local
paths, globs and gs:// all work; pyarrow parses them.

Why not Beam's ReadFromText/ReadFromCsv: they yield one Python object per row and
drop the row number, while prepro needs Arrow batches (vectorised tokenization) and
errors that name the file and row. Large uncompressed text and JSON Lines files are
split into line-aligned parts (`plan_reads`) so several workers share them; other
formats are read one file per worker.
"""

import io
from typing import Dict, Iterator, List, NamedTuple, Optional

import pyarrow as pa

from pipelines.errors import InputError
from prepro.arrow_pickle import table_from_bytes, table_to_bytes

FORMATS = ("text", "csv", "jsonl", "parquet", "tfrecord")
TEXT_COLUMN = "text"
BATCH_ROWS = 65536          # rows per batch for row-by-row formats (JSON Lines, TFRecord)
BATCH_BYTES = 16 << 20      # input bytes per batch for text and CSV
PART_BYTES = 64 << 20       # bytes per part of a split text / JSON Lines file, on every runner


class Batch(NamedTuple):
    path: str
    first_row: int          # 1-based number of the batch's first row in its part of the file
    table: pa.Table
    part_offset: int = 0    # byte offset of that part (0: rows count from the file's start)

    def __reduce__(self):  # see prepro.arrow_pickle
        return (_restore_batch, (self.path, self.first_row, table_to_bytes(self.table), self.part_offset))


def _restore_batch(path, first_row, table, part_offset) -> Batch:
    return Batch(path, first_row, table_from_bytes(table), part_offset)


class ReadTask(NamedTuple):
    """A file, or for line-based formats the lines that start in [start, end); `index`
    is the task's place in the job's canonical (sorted) order of all tasks."""
    path: str
    start: int = 0
    end: Optional[int] = None
    index: int = 0
    size: int = 0   # input bytes the task reads (for progress counters)


SPLITTABLE = ("text", "jsonl")  # one row per line, so a byte range maps to whole rows


def plan_reads(inputs: List[Dict], fmt: str, part_bytes: int) -> List[ReadTask]:
    """Splits large uncompressed text and JSON Lines files into parts of ~part_bytes,
    so several workers share one big file; other files are read whole. `inputs` are
    sorted, so task indices follow (path, start) order."""
    from apache_beam.io.filesystem import CompressionTypes
    tasks = []
    for i in inputs:
        path, size = i["path"], i["bytes"]
        splittable = fmt in SPLITTABLE and \
            CompressionTypes.detect_compression_type(path) == CompressionTypes.UNCOMPRESSED
        if not splittable or size <= part_bytes:
            tasks.append(ReadTask(path, size=size))
            continue
        bounds = list(range(0, size, part_bytes)) + [size]
        tasks.extend(ReadTask(path, a, b, size=b - a) for a, b in zip(bounds, bounds[1:]))
    return [task._replace(index=i) for i, task in enumerate(tasks)]


def match_inputs(patterns: List[str]) -> List[Dict]:
    """Expands paths and globs; sorted, so file order never changes the result."""
    from apache_beam.io.filesystems import FileSystems
    found = {}
    for pattern in patterns:
        matches = FileSystems.match([pattern])[0].metadata_list
        if not matches:
            raise InputError(f"no input file matches {pattern!r}")
        for m in matches:
            found[m.path] = m.size_in_bytes
    return [{"path": p, "bytes": found[p]} for p in sorted(found)]


def read_batches(task, fmt: str, columns: Dict[str, str], batch_bytes: int = BATCH_BYTES) -> Iterator[Batch]:
    """Reads a `ReadTask` (or a path); `columns` maps each needed source column to
    "string" or "int". Compressed files (.gz, .bz2, .zst, ... as Beam detects them by
    extension) are decompressed while streaming.
    """
    task = ReadTask(task) if isinstance(task, str) else task
    path, reader, offset = task.path, _READERS[fmt], 0
    try:
        with open_input(path) as f:
            if task.start or task.end is not None:
                lines = _LineRange(f, task.start, task.end)
                offset, f = lines.first_line_offset, io.BufferedReader(lines, buffer_size=1 << 20)
            for batch in reader(f, path, columns, batch_bytes):
                yield batch._replace(part_offset=offset)
    except InputError as e:
        raise with_file_rows(e, path, offset) from None
    except (OSError, EOFError, pa.ArrowException) as e:
        raise InputError(f"cannot read as {fmt}: {e}", path=path) from None


def with_file_rows(error: InputError, path: str, part_offset: int) -> InputError:
    """An error from a part of a file, with its row counted from the file's start.

    Counting the lines before the part costs a read of them, so it is done only here,
    on the error path."""
    if not part_offset or error.row is None:
        return error
    rows_before = 0
    with open_input(path) as f:
        remaining = part_offset
        while remaining:
            chunk = f.read(min(remaining, 16 << 20))
            if not chunk:
                break
            rows_before += chunk.count(b"\n")
            remaining -= len(chunk)
    return error.shifted(rows_before)


class _LineRange(io.RawIOBase):
    """The lines of a seekable file that start at a byte offset in [start, end): each
    line belongs to exactly one range, whatever the range boundaries."""

    def __init__(self, f, start: int, end: Optional[int]):
        self._f, self._end, self._pending = f, end, b""
        if start:
            f.seek(start - 1)
            f.readline()  # the line holding byte start-1 belongs to the previous range
        self.first_line_offset = self._position = f.tell()
        self._at_line_start = True
        self._done = end is not None and self._position >= end

    def readable(self):
        return True

    def readinto(self, buffer):
        if not self._pending:
            self._pending = self._next_piece(len(buffer))
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _next_piece(self, size: int) -> bytes:
        if self._done:
            return b""
        if self._end is not None and self._position >= self._end:
            # Finish the line that started before `end`, unless the last byte read
            # ended it: the line starting at `end` belongs to the next range.
            data = self._f.readline() if not self._at_line_start else b""
            self._done = True
        else:
            data = self._f.read(size if self._end is None else min(size, self._end - self._position))
            self._done = not data
        self._position += len(data)
        if data:
            self._at_line_start = data.endswith(b"\n")
        return data


def open_input(path: str) -> io.BufferedIOBase:
    """Opens `path` through Beam's file systems as a plain buffered binary stream."""
    from apache_beam.io.filesystem import CompressedFile
    from apache_beam.io.filesystems import FileSystems
    f = FileSystems.open(path, compression_type="auto")
    if isinstance(f, CompressedFile):
        # Beam's CompressedFile is neither iterable nor a file pyarrow accepts (its
        # `closed` is a method, which pyarrow reads as "closed"); a raw-stream adapter
        # gives it the standard io interface.
        return io.BufferedReader(_RawStream(f), buffer_size=1 << 20)
    return f


class _RawStream(io.RawIOBase):
    def __init__(self, f):
        self._f = f

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._f.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self):
        if not self.closed:
            self._f.close()
        super().close()


def _read_text(f, path, columns, batch_bytes):
    _require_columns([TEXT_COLUMN], columns, path, "text files have the single column 'text'")
    row, tail = 1, b""
    while True:
        chunk = f.read(batch_bytes + (1 << 20))  # slack: a part of batch_bytes is one batch
        if not chunk:
            break
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        if lines:
            yield Batch(path, row, _text_table(lines))
            row += len(lines)
    if tail:
        yield Batch(path, row, _text_table([tail]))


def _text_table(lines):
    # Like Beam's ReadFromText: "\n" ends a line and one "\r" before it is dropped.
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    return pa.table({TEXT_COLUMN: pa.array(lines, pa.binary())})


def _read_csv(f, path, columns, batch_bytes):
    from pyarrow import csv
    with open_input(path) as head:
        header = csv.open_csv(io.BytesIO(_first_line(head)), read_options=csv.ReadOptions(block_size=1 << 20))
    _require_columns(columns, header.schema.names, path, "CSV header")

    bad_rows = []

    def bad_row(row):
        # pyarrow ignores exceptions raised in this handler, so remember the row and
        # let pyarrow stop with its own error, which is then replaced below.
        bad_rows.append(row)
        return "error"

    # Strings stay bytes (no UTF-8 check here: the feature's invalid_utf8 policy decides);
    # integers are parsed later so a bad value can be reported with its row.
    types = {name: pa.binary() for name in columns}
    row = 1
    try:
        reader = csv.open_csv(
            f, read_options=csv.ReadOptions(block_size=batch_bytes),
            parse_options=csv.ParseOptions(invalid_row_handler=bad_row, newlines_in_values=True),
            convert_options=csv.ConvertOptions(include_columns=list(columns), column_types=types,
                                               strings_can_be_null=False, quoted_strings_can_be_null=False))
        for record_batch in reader:
            yield Batch(path, row, pa.Table.from_batches([record_batch]))
            row += record_batch.num_rows
    except pa.ArrowInvalid:
        if not bad_rows:
            raise
        bad = bad_rows[0]
        raise InputError(f"CSV row does not parse ({bad.text!r}: expected {bad.expected_columns} "
                         f"columns, got {bad.actual_columns})", path=path,
                         row=_find_bad_csv_row(path, len(header.schema.names))) from None


def _first_line(f) -> bytes:
    head = f.read(1 << 20)
    return head.split(b"\n", 1)[0] + b"\n"


def _find_bad_csv_row(path, num_columns):
    """The 1-based number of the first data row whose field count is wrong.

    pyarrow does not number rows when values may hold newlines, so on this error path
    only, the file is scanned again with Python's csv module (same quoting rules).
    Blank lines are not rows (pyarrow skips them), so they are not counted here either.
    """
    import csv
    with open_input(path) as f:
        text = io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline="")
        records = (fields for fields in csv.reader(text) if fields)
        for number, fields in enumerate(records):
            if number and len(fields) != num_columns:
                return number
    return None


def _read_jsonl(f, path, columns, batch_bytes):
    import json
    from pyarrow import json as pa_json
    # Row by row so every error names its row; json.loads is C, and values go into
    # Arrow arrays per batch.
    rows, first = [], 1
    for number, line in enumerate(f, start=1):
        if not line.strip():
            raise InputError("empty line in JSON Lines", path=path, row=number)
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"not a JSON object: {e}", path=path, row=number) from None
        if not isinstance(obj, dict):
            raise InputError("a JSON Lines row must be an object", path=path, row=number)
        rows.append(obj)
        if len(rows) == BATCH_ROWS:
            yield Batch(path, first, _json_table(rows, columns, path, first))
            first += len(rows)
            rows = []
    if rows:
        yield Batch(path, first, _json_table(rows, columns, path, first))


def _json_table(rows, columns, path, first):
    out = {}
    for name, kind in columns.items():
        # An absent key is a missing value, like null; a column absent everywhere
        # ends the job with "no tokens to learn" for its features.
        values = [r.get(name) for r in rows]
        out[name] = _python_column(values, kind, name, path, first)
    return pa.table(out)


def _python_column(values, kind, name, path, first):
    if kind == "hashable":  # Keras's Hashing takes strings or integers: the column's first value decides
        items = (i for v in values for i in (v if isinstance(v, list) else [v]) if i is not None)
        kind = "int" if isinstance(next(items, ""), int) else "string"
    scalar = str if kind == "string" else (int, float) if kind == "float" else int
    arrow_type = pa.binary() if kind == "string" else pa.float64() if kind == "float" else pa.int64()
    for i, v in enumerate(values):
        items = v if isinstance(v, list) else [v]
        for item in items:
            if item is not None and (not isinstance(item, scalar) or isinstance(item, bool)):
                raise InputError(f"column '{name}': expected {kind} values, found {item!r}",
                                 path=path, row=first + i)
    if any(isinstance(v, list) for v in values):
        values = [v if isinstance(v, list) or v is None else [v] for v in values]
        item_type = arrow_type
        values = [[s.encode("utf-8") if kind == "string" and s is not None else s for s in v]
                  if v is not None else None for v in values]
        return pa.array(values, pa.list_(item_type))
    if kind == "string":
        return pa.array([v.encode("utf-8") if v is not None else None for v in values], pa.binary())
    try:
        return pa.array(values, arrow_type)
    except OverflowError as e:
        raise InputError(f"column '{name}': integer out of int64 range ({e})", path=path, row=first) from None


def _read_parquet(f, path, columns, batch_bytes):
    import pyarrow.parquet as pq
    parquet = pq.ParquetFile(f)
    _require_columns(columns, parquet.schema_arrow.names, path, "Parquet schema")
    row = 1
    for record_batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(columns)):
        yield Batch(path, row, pa.Table.from_batches([record_batch]))
        row += record_batch.num_rows


def _read_tfrecord(f, path, columns, batch_bytes):
    # Beam's TFRecord framing reader (it checks the CRCs); tfx-bsl decodes Examples
    # into Arrow in C++, without importing TensorFlow.
    from apache_beam.io.tfrecordio import _TFRecordUtil
    from tfx_bsl.coders.example_coder import ExamplesToRecordBatchDecoder
    decoder = ExamplesToRecordBatchDecoder()
    records, row = [], 1
    while True:
        try:
            record = _TFRecordUtil.read_record(f)
        except Exception as e:  # corrupt framing or CRC
            raise InputError(f"corrupt TFRecord: {e}", path=path, row=row + len(records)) from None
        if record is not None:
            records.append(record)
        if records and (record is None or len(records) == BATCH_ROWS):
            try:
                batch = decoder.DecodeBatch(records)
            except Exception as e:
                raise InputError(f"not a tf.train.Example: {e}", path=path, row=row) from None
            yield Batch(path, row, _example_table(batch, columns, path, row, len(records)))
            row += len(records)
            records = []
        if record is None:
            break


def _example_table(batch, columns, path, row, num_rows):
    out = {}
    for name, kind in columns.items():
        index = batch.schema.get_field_index(name)
        if index < 0:
            out[name] = pa.nulls(num_rows, pa.list_(pa.binary() if kind in ("string", "hashable") else
                                                    pa.float32() if kind == "float" else pa.int64()))
            continue
        column = batch.column(index)
        value_type = column.type.value_type
        is_bytes = pa.types.is_binary(value_type) or pa.types.is_large_binary(value_type)
        expected = {"string": is_bytes, "int": pa.types.is_integer(value_type),
                    "hashable": is_bytes or pa.types.is_integer(value_type),
                    "float": pa.types.is_integer(value_type) or pa.types.is_floating(value_type)}[kind]
        if not expected:
            wanted = {"string": "bytes_list", "int": "int64_list", "hashable": "bytes_list or int64_list",
                      "float": "float_list or int64_list"}[kind]
            raise InputError(f"feature '{name}' holds {value_type} values, expected {wanted}",
                             path=path, row=row)
        out[name] = column
    return pa.table(out)


def _require_columns(needed, present, path, what):
    missing = [c for c in needed if c not in present]
    if missing:
        raise InputError(f"missing column(s) {missing} ({what} has {list(present)})", path=path)


_READERS = {"text": _read_text, "csv": _read_csv, "jsonl": _read_jsonl,
            "parquet": _read_parquet, "tfrecord": _read_tfrecord}
