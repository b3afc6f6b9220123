"""Input files -> Arrow record batches, with each batch's file and first row.

Formats: text (one row per line, column `text`), csv (header row), jsonl, parquet and
tfrecord (tf.train.Example). Files are opened through Beam's FileSystems, so local
paths, globs and gs:// all work; pyarrow parses them. Local inputs are checked before the
job (`match_inputs`: regular files only), compressed ones are decompressed here
(`Decompressed`), and every problem with a file is an InputError naming it and, where
there is one, the row (policy: docs/artifact-format.md, "Input policy").

Why not Beam's ReadFromText/ReadFromCsv: they yield one Python object per row and
drop the row number, while prepro needs Arrow batches (vectorised tokenization) and
errors that name the file and row. Large uncompressed text and JSON Lines files are
split into line-aligned parts (`plan_reads`) so several workers share them; other
formats are read one file per worker.
"""

import bz2
import codecs
import errno
import io
import lzma
import math
import os
import queue
import re
import stat
import struct
import threading
import zlib
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import zstandard

from pipelines.errors import InputError
from pipelines.arrow_pickle import table_from_bytes, table_to_bytes
from prepro import fs

FORMATS = ("text", "csv", "jsonl", "parquet", "tfrecord")
TEXT_COLUMN = "text"
BATCH_ROWS = 65536          # rows per batch for row-by-row formats (JSON Lines, TFRecord)
BATCH_BYTES = 16 << 20      # input bytes per batch for text and CSV
PART_BYTES = 64 << 20       # bytes per part of a split text / JSON Lines file, on every runner
INT64_RANGE = range(-(1 << 63), 1 << 63)  # what integer features take (Keras's int64)
ELEMENTS = "<elements>"  # the "file" of batches made from a PCollection's elements (pipelines/elements.py)


class Batch(NamedTuple):
    path: str
    first_row: int          # 1-based number of the batch's first row in its part of the file
    table: pa.Table
    part_offset: int = 0    # byte offset of that part (0: rows count from the file's start)

    def __reduce__(self):  # see pipelines.arrow_pickle
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
    fmt: str = "text"


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
    return [task._replace(index=i, fmt=fmt) for i, task in enumerate(tasks)]


def match_inputs(patterns: List[str]) -> List[Dict]:
    """Expands paths and globs into input files with their sizes; sorted, so file order
    never changes the result. Local inputs are checked here, before the job runs (see
    `_local_inputs`); remote ones are objects Beam's file systems list."""
    FileSystems = fs.beam_filesystems()
    from apache_beam.io.localfilesystem import LocalFileSystem
    found = {}
    for pattern in patterns:
        if isinstance(FileSystems.get_filesystem(pattern), LocalFileSystem):
            matches = _local_inputs(pattern)
        else:
            matches = {m.path: m.size_in_bytes for m in FileSystems.match([pattern])[0].metadata_list}
        if not matches:
            raise InputError(f"no input file matches {pattern!r}")
        found.update(matches)
    return [{"path": p, "bytes": found[p]} for p in sorted(found)]


_GLOB = re.compile(r"[*?[]")  # Beam's glob characters


def _local_inputs(pattern: str) -> Dict[str, int]:
    """Local files a path or glob names, each a readable regular file (after resolving
    symlinks), with its size. Anything else is an InputError naming the path, so a
    FIFO or a device never blocks or floods a worker.

    A glob matches as Beam's local file system matches it (`*` within a directory, `**`
    across them, dotfiles included), but is listed here rather than by Beam, which
    passes over broken symlinks in silence. Directories a glob matches are not inputs
    (as in Beam); a path named without a glob must be a file.
    """
    from apache_beam.io.filesystem import FileSystem
    if pattern.endswith(("/", "\\")):
        pattern += "*"  # as Beam reads a directory given with a trailing slash
    if not _GLOB.search(pattern):
        try:
            os.lstat(pattern)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError:
            pass  # e.g. a directory on the way cannot be searched: said below
        return {pattern: _regular_file_size(pattern)}
    matches = re.compile(FileSystem.translate_pattern(pattern)).match
    root = os.path.dirname(_GLOB.split(pattern, 1)[0])
    found = {}

    def unlistable(error: OSError):
        # A directory the glob could reach but this process cannot list: its files would
        # be left out in silence (Beam's listing does that).
        if not isinstance(error, (FileNotFoundError, NotADirectoryError)) and \
                (error.filename == (root or os.curdir) or "**" in pattern):
            raise InputError(f"directory cannot be listed: {error.strerror}", path=error.filename)

    # A relative glob in the working directory ('*.csv') lists "." (Beam lists nothing).
    for directory, _, names in os.walk(root or os.curdir, onerror=unlistable):
        for name in names:  # os.walk lists every entry that is not a directory here
            path = os.path.join(directory, name) if root else os.path.relpath(os.path.join(directory, name))
            if matches(path):
                found[path] = _regular_file_size(path)
    return found


def _regular_file_size(path: str) -> int:
    """The size of `path` if it is a regular file (symlinks followed) that this process
    can open, else an InputError saying what it is."""
    try:
        info = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError("input is a symlink loop; only regular files are read", path=path) from None
        if e.errno == errno.ENOENT and os.path.islink(path):
            raise InputError(f"input is a broken symlink (to {os.readlink(path)!r}); only regular files "
                             f"are read", path=path) from None
        raise InputError(f"input cannot be read: {e.strerror}", path=path) from None
    kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
    if kind != "a regular file":
        hint = " (give a glob such as 'dir/*' for the files in it)" if kind == "a directory" else ""
        raise InputError(f"input is {kind}; only regular files are read{hint}", path=path)
    try:  # non-blocking, in case it was swapped for a FIFO since the stat
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    except OSError as e:
        raise InputError(f"input cannot be opened: {e.strerror}", path=path) from None
    return info.st_size


_FILE_KINDS = {stat.S_IFREG: "a regular file", stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)",
               stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}


def read_batches(task, fmt: str, columns: Dict[str, str], batch_bytes: int = BATCH_BYTES,
                 features_of: Optional[Dict[str, List[str]]] = None,
                 bytes_read: Optional[Callable[[int], None]] = None) -> Iterator[Batch]:
    """Reads a `ReadTask` (or a path); `columns` maps each needed source column to the
    kind of values its features read ("string", "int", "float", "hashable").
    Compressed files (.gz, .bz2, .zst, ... as Beam detects them by extension) are
    decompressed while streaming. `bytes_read`, if given, is called after each batch is
    consumed with how many of the task's bytes of the file are read so far (of the
    compressed file, for a compressed one; an estimate: see `_position_in_task`).

    Every problem with the file is an InputError naming it (and the row, where there
    is one, and the features reading the column, given `features_of`: see
    `features_of_columns`); nothing else escapes.
    """
    task = ReadTask(task, fmt=fmt) if isinstance(task, str) else task
    path, reader, offset = task.path, _READERS[fmt], 0
    try:
        raw = _open_raw(path)
        with _content(raw, path) as f:
            if task.start or task.end is not None:
                lines = _LineRange(f, task.start, task.end)
                offset, f = lines.first_line_offset, io.BufferedReader(lines, buffer_size=1 << 20)
            if offset == 0 and fmt in SPLITTABLE:
                _skip_bom(f)  # pyarrow's CSV reader skips it itself
            for number, batch in enumerate(reader(f, path, columns, batch_bytes), start=1):
                yield batch._replace(part_offset=offset)
                if bytes_read is not None:
                    # pyarrow's CSV reader reads the whole file ahead of its batches, each
                    # cut from batch_bytes of it: the position is no measure there.
                    bound = number * batch_bytes if fmt == "csv" else None
                    bytes_read(_position_in_task(raw, task, bound))
    except InputError as e:
        raise with_file_rows(e.naming_features(features_of or {}), path, offset) from None
    except CompressedDataError as e:
        raise InputError(f"{e} ({e.reached(fmt)})", path=path) from None
    except (OSError, EOFError, pa.ArrowException) as e:
        raise InputError(f"cannot read as {fmt}: {e}", path=path) from None


class _Stopped(BaseException):
    """The reader of `read_ahead` stopped: its producer leaves (not an error of the input)."""


def read_ahead(batches_of: Callable[[Callable[[int], None]], Iterator[Batch]],
               bytes_read: Optional[Callable[[int], None]] = None) -> Iterator[Batch]:
    """`batches_of(bytes_read)`'s batches, read one batch ahead in a thread.

    Reading (decompressing, splitting lines, parsing) then overlaps the work on the
    previous batch instead of leaving a core idle: on 2 cores the unigram job reads
    263 MB of text in 0.3 s of its own thread rather than on the critical path. The
    order of batches, errors and `bytes_read` calls is `read_batches`' own, and
    `bytes_read` runs in the caller's thread (Beam's metrics are per thread). A caller
    that stops early stops the reader, which closes its file."""
    items: "queue.Queue" = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item) -> None:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped()

    def produce() -> None:
        try:
            for batch in batches_of(lambda position: put(("read", position))):
                put(("batch", batch))
            put(("end", None))
        except _Stopped:
            pass
        except BaseException as e:  # handed to the caller, which raises it in order
            try:
                put(("error", e))
            except _Stopped:
                pass

    reader = threading.Thread(target=produce, name="prepro-read-ahead", daemon=True)
    reader.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "batch":
                yield value
            elif kind == "read":
                if bytes_read is not None:
                    bytes_read(value)
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        reader.join()


def features_of_columns(features) -> Dict[str, List[str]]:
    """Column -> the names of the features (FeatureSpecs) that read it."""
    out: Dict[str, List[str]] = {}
    for f in features:
        for column in f.sources + ((f.weight,) if f.weight else ()):
            out.setdefault(column, []).append(f.name)
    return out


def _skip_bom(f) -> None:
    """Reads past a UTF-8 byte order mark at the start of a file: an encoding
    signature, not content (as Python's utf-8-sig, pyarrow's CSV reader and JSON
    parsers treat it)."""
    head = f.peek(3)[:3] if hasattr(f, "peek") else None
    if head is None and f.seekable():
        head = f.read(3)
        f.seek(0)
    if head == codecs.BOM_UTF8:
        f.read(3)


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
    """Opens `path` through Beam's file systems as a plain buffered binary stream of its
    content: compressed files (by extension, as Beam detects them) are decompressed."""
    return _content(_open_raw(path), path)


def _open_raw(path: str) -> io.BufferedIOBase:
    """The file's bytes as stored (compressed or not)."""
    from apache_beam.io.filesystem import CompressionTypes
    return fs.beam_filesystems().open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _content(raw: io.BufferedIOBase, path: str) -> io.BufferedIOBase:
    from apache_beam.io.filesystem import CompressionTypes
    kind = CompressionTypes.detect_compression_type(path)
    if kind == CompressionTypes.UNCOMPRESSED:
        return raw
    return io.BufferedReader(Decompressed(raw, kind), buffer_size=1 << 20)


def _position_in_task(raw, task: ReadTask, bound: Optional[int] = None) -> int:
    """Bytes of the task's range of the stored file read so far, within [0, task.size]
    and at most `bound` (a parquet reader seeks around: its position is an estimate, as
    is a decompressing reader's read-ahead)."""
    try:
        position = raw.tell() - task.start
    except (OSError, ValueError, AttributeError):  # closed, or a stream without a position
        return 0
    return max(0, min(task.size, position, task.size if bound is None else bound))


class CompressedDataError(Exception):
    """Compressed input that does not decompress: cut short or corrupt. `content_bytes`
    and `content_lines` say how far its content was read."""

    def __init__(self, message: str, content_bytes: int, content_lines: int):
        super().__init__(message)
        self.content_bytes, self.content_lines = content_bytes, content_lines
        self.rows_read: Optional[int] = None  # set by a reader that counts its rows

    def reached(self, fmt: str) -> str:
        """How far the file was read: rows where they are known (text and JSON Lines
        rows are lines), else bytes of content."""
        rows = self.content_lines if fmt in SPLITTABLE else self.rows_read
        return f"after row {rows}" if rows is not None else f"after {self.content_bytes:,} bytes of content"


class Decompressed(io.RawIOBase):
    """The content of a compressed file: one compressed stream after another (gzip
    members, bzip2 and xz streams, zlib streams, zstd frames), as Beam's CompressedFile
    reads them, through the standard library's decompressors and `zstandard`.

    Why not Beam's CompressedFile: it returns what it has when the file ends inside a
    stream (a truncated .gz or .bz2 reads as empty, a truncated .zst as a prefix), so a
    cut file would give an artifact of part of the data. Here every stream must reach
    its end marker (a file that ends inside one is truncated), anything after a stream
    must be another stream, and a 0-byte file is empty, as Python's gzip/bz2/lzma read
    it. Output per read is bounded (no whole-chunk inflation of highly compressed data).
    """

    INPUT_CHUNK = 64 << 10

    def __init__(self, raw, kind: str):
        self._raw, self._kind = raw, kind
        self._decoder = _DECODERS[kind]()
        self._started = False  # any compressed bytes at all (a 0-byte file is empty)
        self.content_bytes = self.content_lines = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._next(len(buffer))
        buffer[:len(data)] = data
        self.content_bytes += len(data)
        self.content_lines += data.count(b"\n")
        return len(data)

    def _next(self, limit: int) -> bytes:
        while True:
            decoder = self._decoder
            if decoder.eof:  # a stream ended: the next one, or the end of the file
                data = decoder.unused_data or self._raw.read(self.INPUT_CHUNK)
                if not data:
                    return b""
                decoder = self._decoder = _DECODERS[self._kind]()
            elif decoder.needs_input:
                data = self._raw.read(self.INPUT_CHUNK)
                if not data:
                    out = self._decompress(b"", limit)  # output held back by the limit
                    if out or not self._started:
                        return out
                    raise self._error(f"truncated {self._kind} data: the file ends inside a compressed stream")
            else:
                data = b""
            self._started = True
            out = self._decompress(data, limit)
            if out:
                return out

    def _decompress(self, data: bytes, limit: int) -> bytes:
        try:
            return self._decoder.decompress(data, limit)
        except (zlib.error, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as e:
            raise self._error(f"corrupt {self._kind} data ({e})") from None

    def _error(self, message: str) -> CompressedDataError:
        return CompressedDataError(message, self.content_bytes, self.content_lines)

    def close(self):
        if not self.closed:
            self._raw.close()
        super().close()


class _ZlibDecoder:
    """zlib's decompressor with the interface of bz2's and lzma's (`needs_input`;
    input it could not take yet is kept, not handed back)."""

    def __init__(self, wbits: int):
        self._d = zlib.decompressobj(wbits)

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._d.decompress(self._d.unconsumed_tail + data, max_length)

    @property
    def needs_input(self) -> bool:
        return not self._d.unconsumed_tail

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data


class _ZstdDecoder:
    """zstandard's decompressobj with the interface of bz2's and lzma's. It has no
    output limit, so input goes in small slices (zstd expands a byte at most ~32,000
    times: at most ~256 MB per slice) and output is handed out up to `max_length`."""

    SLICE = 8 << 10

    def __init__(self):
        # Beam's window limit, so every file Beam reads is read here.
        self._d = zstandard.ZstdDecompressor(max_window_size=1 << 31).decompressobj()
        self._input, self._output = b"", b""

    def decompress(self, data: bytes, max_length: int) -> bytes:
        self._input += data
        while not self._output and self._input and not self._d.eof:
            piece, self._input = self._input[:self.SLICE], self._input[self.SLICE:]
            self._output = self._d.decompress(piece)
        out, self._output = self._output[:max_length], self._output[max_length:]
        return out

    @property
    def needs_input(self) -> bool:
        return not self._input and not self._output

    @property
    def eof(self) -> bool:
        return self._d.eof and not self._output

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data + self._input


_DECODERS = {
    "gzip": lambda: _ZlibDecoder(zlib.MAX_WBITS | 16),   # gzip header and trailer (CRC, size)
    "deflate": lambda: _ZlibDecoder(zlib.MAX_WBITS),     # Beam's DEFLATE: a zlib (RFC 1950) stream
    "bzip2": bz2.BZ2Decompressor,
    "lzma": lzma.LZMADecompressor,                        # .xz and .lzma (format detected)
    "zstd": _ZstdDecoder,
}


def _read_text(f, path, columns, batch_bytes):
    others = sorted(set(columns) - {TEXT_COLUMN})
    if others:
        raise InputError(f"the spec reads column(s) {others}, but a text file has the single column "
                         f"'{TEXT_COLUMN}'", path=path)
    row, tail = 1, b""
    while True:
        chunk = f.read(batch_bytes + (1 << 20))  # slack: a part of batch_bytes is one batch
        if not chunk:
            break
        data = tail + chunk if tail else chunk
        end = data.rfind(b"\n") + 1
        tail = data[end:]
        if end:
            table = _text_table(memoryview(data)[:end])
            yield Batch(path, row, table)
            row += table.num_rows
    if tail:
        yield Batch(path, row, _text_table(tail + b"\n"))


def _text_table(data) -> pa.Table:
    """The lines of `data` (bytes ending in "\n") as one binary column. Like Beam's
    ReadFromText: "\n" ends a line and one "\r" before it is dropped.

    In NumPy over the whole buffer rather than `bytes.split` (a Python object per line):
    263 MB of lines take 0.3 s instead of 1.1 s."""
    buf = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(buf == 0x0A)
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 0x0D)
    drop = buf == 0x0A
    drop[ends[cr] - 1] = True
    offsets = np.zeros(len(ends) + 1, np.int64)
    np.cumsum(ends - starts - cr, out=offsets[1:])
    body = buf[~drop]
    if len(body) >= 1 << 31:  # a line of over 2 GiB: Arrow's binary offsets are 32-bit
        raise pa.ArrowCapacityError(f"a text line of over 2 GiB (Arrow's limit) in {len(body)} bytes of lines")
    lines = pa.BinaryArray.from_buffers(pa.binary(), len(ends), [None, pa.py_buffer(offsets.astype(np.int32)),
                                                                   pa.py_buffer(body)])
    return pa.table({TEXT_COLUMN: lines})


def _read_csv(f, path, columns, batch_bytes):
    from pyarrow import csv
    header = _csv_header(path)
    _require_columns(columns, header, path, "CSV header")
    # Strings stay bytes (no UTF-8 check here: the feature's invalid_utf8 policy decides);
    # integers are parsed later so a bad value can be reported with its row.
    types = {name: pa.binary() for name in columns}
    row = 1
    try:
        reader = csv.open_csv(
            f, read_options=csv.ReadOptions(block_size=batch_bytes),
            parse_options=csv.ParseOptions(newlines_in_values=True),
            convert_options=csv.ConvertOptions(include_columns=list(columns), column_types=types,
                                               strings_can_be_null=False, quoted_strings_can_be_null=False))
        for record_batch in reader:
            yield Batch(path, row, pa.Table.from_batches([record_batch]))
            row += record_batch.num_rows
    except pa.ArrowInvalid as e:
        # Not pyarrow's invalid_row_handler: pyarrow cannot hand it a row that is not
        # UTF-8 (it prints a traceback on stderr and drops the handler's call).
        bad = _find_bad_csv_row(path, len(header))
        if bad is None:
            raise InputError(f"CSV does not parse: {e}", path=path) from None
        number, fields = bad
        raise InputError(f"CSV row does not parse ({_short(','.join(fields))}: expected {len(header)} "
                         f"columns, got {len(fields)})", path=path, row=number) from None


def _csv_header(path) -> List[str]:
    """The CSV header's column names: the first record that is not a blank line, as
    pyarrow takes it. Parsed with Python's csv module (pyarrow's quoting rules), since
    pyarrow cannot give names that are not UTF-8: those keep their bytes as lone
    surrogates here, so only the columns the spec reads must be UTF-8."""
    import csv
    with open_input(path) as f:
        text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline="")
        try:
            for fields in csv.reader(text):
                if fields:
                    return fields
        except csv.Error as e:
            raise InputError(f"the CSV header does not parse: {e}", path=path) from None
    raise InputError("empty CSV file: there is no header line", path=path)


def _find_bad_csv_row(path, num_columns) -> Optional[Tuple[int, List[str]]]:
    """The first data row whose field count is wrong: its 1-based number and fields.

    pyarrow does not number rows when values may hold newlines, so on this error path
    only, the file is scanned again with Python's csv module (same quoting rules).
    Blank lines are not rows (pyarrow skips them), so they are not counted here either.
    """
    import csv
    with open_input(path) as f:
        text = io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline="")
        records = (fields for fields in csv.reader(text) if fields)
        try:
            for number, fields in enumerate(records):
                if number and len(fields) != num_columns:
                    return number, fields
        except csv.Error:  # e.g. a field over the csv module's size limit
            return None
    return None


def _read_jsonl(f, path, columns, batch_bytes):
    import json
    # Row by row so every error names its row; json.loads is C, and values go into
    # Arrow arrays per batch.
    rows, first = [], 1
    for number, line in enumerate(f, start=1):
        if not line.strip():
            raise InputError("empty line in JSON Lines", path=path, row=number)
        try:
            # Bytes that are not UTF-8 become lone surrogates here and their bytes again
            # in the column (`_utf8`), so each feature's invalid_utf8 policy decides.
            obj = json.loads(line.decode("utf-8", "surrogateescape"))
        except json.JSONDecodeError as e:
            raise InputError(f"not a JSON object: {e}", path=path, row=number) from None
        except RecursionError:
            raise InputError("JSON nested too deeply to parse", path=path, row=number) from None
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
    """JSON values of one column -> an Arrow array of the kind its features read
    (a list array if any value is a list). Duplicate keys: json.loads keeps the last."""
    if kind == "hashable":  # Keras's Hashing takes strings or integers: the column's first value decides
        items = (i for v in values for i in (v if isinstance(v, list) else [v]) if i is not None)
        kind = "int" if isinstance(next(items, ""), int) else "string"
    scalar = (str, bytes) if kind == "string" else (int, float) if kind == "float" else int
    arrow_type = pa.binary() if kind == "string" else pa.float64() if kind == "float" else pa.int64()
    for i, v in enumerate(values):
        for item in v if isinstance(v, list) else [v]:
            if item is not None and (not isinstance(item, scalar) or isinstance(item, bool)):
                raise InputError(f"column '{name}': expected {kind} values, found {_short(item)}",
                                 path=path, row=first + i, column=name)
            if kind == "int" and item is not None and item not in INT64_RANGE:
                raise InputError(f"column '{name}': {item} is outside the int64 range",
                                 path=path, row=first + i, column=name)
    convert = _utf8 if kind == "string" else _float if kind == "float" else None
    if any(isinstance(v, list) for v in values):
        values = [v if isinstance(v, list) or v is None else [v] for v in values]
        if convert:
            values = [[convert(s) if s is not None else None for s in v] if v is not None else None
                      for v in values]
        return pa.array(values, pa.list_(arrow_type))
    if convert:
        values = [convert(v) if v is not None else None for v in values]
    return pa.array(values, arrow_type)


def _utf8(value) -> bytes:
    if isinstance(value, bytes):  # BYTES values of a PCollection's elements, as they are
        return value
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        # Not Unicode text: bytes of the line that were not UTF-8 come back as they
        # were; a lone surrogate escape ("\ud800") becomes bytes that are not UTF-8
        # either. The feature's invalid_utf8 policy decides (pipelines/extract.py).
        try:
            return value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass")


def _float(value) -> float:
    # An integer beyond float64's range is +-inf, as its text would parse ("1e999").
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_parquet(f, path, columns, batch_bytes):
    import pyarrow.parquet as pq
    if not f.seekable():
        # A compressed Parquet file: Parquet reads its footer first, so the content is
        # held in memory (Parquet compresses its pages itself; prefer that).
        f = pa.BufferReader(f.read())
    try:
        parquet = pq.ParquetFile(f)
        names = parquet.schema_arrow.names
    except UnicodeDecodeError as e:  # pyarrow decodes names and metadata strictly
        raise InputError(f"cannot read as parquet: its schema holds text that is not UTF-8 ({e})",
                         path=path) from None
    _require_columns(columns, names, path, "Parquet schema")
    row = 1
    batches = parquet.iter_batches(batch_size=BATCH_ROWS, columns=list(columns))
    while True:
        try:
            record_batch = next(batches, None)
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"cannot read as parquet: {e} (after row {row - 1})", path=path) from None
        if record_batch is None:
            return
        yield Batch(path, row, pa.Table.from_batches([record_batch]))
        row += record_batch.num_rows


def _read_tfrecord(f, path, columns, batch_bytes):
    # Beam's TFRecord framing reader (it checks the CRCs); tfx-bsl decodes Examples
    # into Arrow in C++, without importing TensorFlow.
    records, row = [], 1
    while True:
        try:
            record = _read_record(f)
        except CompressedDataError as e:
            e.rows_read = row + len(records) - 1
            raise
        except ValueError as e:
            raise InputError(str(e), path=path, row=row + len(records)) from None
        if record is not None:
            records.append(record)
        if records and (record is None or len(records) == BATCH_ROWS):
            yield Batch(path, row, _example_table(_decoded_examples(records, path, row), columns, path, row))
            row += len(records)
            records = []
        if record is None:
            break


def _read_record(f) -> Optional[bytes]:
    """The next TFRecord's payload (None at the end of the file), its length and data
    checked against their CRC-32Cs. Beam's (private) _TFRecordUtil.read_record reads
    the same framing, but asks for a record's whole claimed length at once (a corrupt
    length with a matching checksum allocates it) and puts the whole record in hex in
    its error messages."""
    header = f.read(12)
    if not header:
        return None
    if len(header) < 12:
        raise ValueError(f"truncated TFRecord: the file ends inside a record's header ({len(header)} of 12 bytes)")
    length, length_crc = struct.unpack("<QI", header)
    if masked_crc32c(header[:8]) != length_crc:
        raise ValueError("corrupt TFRecord: a record's length does not match its checksum")
    data = _read_up_to(f, length + 4)
    if len(data) < length + 4:
        raise ValueError(f"truncated TFRecord: the file ends inside a record ({len(data):,} of "
                         f"{length + 4:,} bytes)")
    payload, (data_crc,) = data[:length], struct.unpack("<I", data[length:])
    if masked_crc32c(payload) != data_crc:
        raise ValueError("corrupt TFRecord: a record's data does not match its checksum")
    return payload


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C (google-crc32c's C implementation), rotated right
    by 15 bits plus a constant, as TensorFlow's `crc32c::Mask` defines it."""
    import google_crc32c
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_up_to(f, size: int) -> bytes:
    """Up to `size` bytes, read in pieces, so a huge claimed size reads what there is."""
    pieces = []
    while size > 0:
        piece = f.read(min(size, 64 << 20))
        if not piece:
            break
        pieces.append(piece)
        size -= len(piece)
    return b"".join(pieces)


def _decoded_examples(records: List[bytes], path: str, row: int) -> pa.RecordBatch:
    from tfx_bsl.coders.example_coder import ExamplesToRecordBatchDecoder
    decoder = ExamplesToRecordBatchDecoder()
    try:
        return decoder.DecodeBatch(records)
    except Exception as e:  # tfx-bsl raises RuntimeError and others from C++
        batch_error = e
    # Error path: find the first record that does not decode, alone or after the others
    # (a feature's list type must be the same in every Example of a batch).
    for i in range(len(records)):
        try:
            alone = decoder.DecodeBatch(records[i:i + 1])
        except Exception as e:
            raise InputError(f"not a tf.train.Example: {e}", path=path, row=row + i) from None
        try:
            decoder.DecodeBatch(records[:i + 1])
        except Exception as e:
            before = decoder.DecodeBatch(records[:i])
            for field in alone.schema:
                earlier = before.schema.field(field.name).type if field.name in before.schema.names else None
                if earlier is not None and not pa.types.is_null(earlier) and earlier != field.type:
                    raise InputError(f"the Example feature '{field.name}' holds {_list_name(field.type)} here and "
                                     f"{_list_name(earlier)} in earlier rows", path=path, row=row + i,
                                     column=field.name) from None
            raise InputError(f"not a tf.train.Example like the rows before it: {e}", path=path, row=row + i) from None
    raise InputError(f"records do not decode as tf.train.Examples: {batch_error}", path=path, row=row)


def _list_name(list_type: pa.DataType) -> str:
    value_type = str(list_type.value_type) if hasattr(list_type, "value_type") else str(list_type)
    return _LIST_NAMES.get(value_type, value_type)


def _example_table(batch, columns, path, row):
    out = {}
    for name, kind in columns.items():
        index = batch.schema.get_field_index(name)
        if index < 0:
            out[name] = pa.nulls(batch.num_rows, _EXAMPLE_LIST_TYPES[kind])
            continue
        column = batch.column(index)
        if pa.types.is_null(column.type):  # no record sets a kind for this feature
            column = pa.nulls(batch.num_rows, _EXAMPLE_LIST_TYPES[kind])
        value_type = column.type.value_type
        is_bytes = pa.types.is_binary(value_type) or pa.types.is_large_binary(value_type)
        expected = {"string": is_bytes, "int": pa.types.is_integer(value_type),
                    "hashable": is_bytes or pa.types.is_integer(value_type),
                    "float": pa.types.is_integer(value_type) or pa.types.is_floating(value_type)}[kind]
        if not expected:
            wanted = {"string": "bytes_list", "int": "int64_list", "hashable": "bytes_list or int64_list",
                      "float": "float_list or int64_list"}[kind]
            first = int(np.flatnonzero(pc.is_valid(column).to_numpy(zero_copy_only=False))[0])
            raise InputError(f"the Example feature '{name}' holds {_list_name(column.type)}, "
                             f"expected {wanted}", path=path, row=row + first, column=name)
        out[name] = column
    return pa.table(out)


_EXAMPLE_LIST_TYPES = {"string": pa.list_(pa.binary()), "hashable": pa.list_(pa.binary()),
                       "float": pa.list_(pa.float32()), "int": pa.list_(pa.int64())}
_LIST_NAMES = {"float": "a float_list", "int64": "an int64_list", "binary": "a bytes_list",
               "large_binary": "a bytes_list"}


def _require_columns(needed, present, path, what):
    missing = [c for c in needed if c not in present]
    if missing:
        shown = ", ".join(_short(p) for p in list(present)[:20]) + (", ..." if len(present) > 20 else "")
        raise InputError(f"missing column(s) {missing} ({what} has [{shown}])", path=path,
                         column=missing[0] if len(missing) == 1 else None)
    repeated = sorted(c for c in needed if list(present).count(c) > 1)
    if repeated:
        raise InputError(f"column(s) {repeated} appear more than once in the {what}, so which one to "
                         f"read is ambiguous", path=path, column=repeated[0] if len(repeated) == 1 else None)


_READERS = {"text": _read_text, "csv": _read_csv, "jsonl": _read_jsonl,
            "parquet": _read_parquet, "tfrecord": _read_tfrecord}
