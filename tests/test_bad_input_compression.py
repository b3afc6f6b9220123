"""Compressed inputs: every format x every compression Beam reads (by extension), valid,
truncated and corrupt, through the real job.

A valid compressed file reads exactly like its content (several members / streams /
frames included); a truncated or corrupt one is an InputError naming the file, and
nothing is published (Beam's own reader returns a prefix or nothing for a truncated
file: see pipelines/io.py, Decompressed).
"""

import pyarrow as pa
import pytest

from test_bad_input import (COMPRESSIONS, analyze_error, assert_error, file_rows, make_spec, parquet_bytes,
                            run, string_lookup, text_vectorization, tf_example, tfrecord_bytes, write)

ROWS = 300  # enough that half of a compressed file holds whole rows and a cut inside data


def _content(fmt: str) -> bytes:
    tokens = [f"C{i % 37:02d}" for i in range(ROWS)]
    if fmt == "text":
        return "".join(f"{t} late\n" for t in tokens).encode()
    if fmt == "csv":
        return ("carrier,n\n" + "".join(f"{t},{i}\n" for i, t in enumerate(tokens))).encode()
    if fmt == "jsonl":
        return "".join(f'{{"carrier": "{t}", "n": {i}}}\n' for i, t in enumerate(tokens)).encode()
    if fmt == "parquet":
        return parquet_bytes(pa.table({"carrier": tokens, "n": list(range(ROWS))}))
    return tfrecord_bytes([tf_example(carrier=[t.encode()], n=[i]) for i, t in enumerate(tokens)])


def _spec(fmt):
    return make_spec(carrier=text_vectorization() if fmt == "text" else string_lookup("carrier"))


FORMATS = ("text", "csv", "jsonl", "parquet", "tfrecord")


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_compressed_files_read_as_their_content(tmp_path, fmt):
    # One job per format: the plain file, each compression, and each compression's
    # concatenation of two streams (gzip members, bzip2/xz streams, zlib streams, zstd
    # frames), which Beam reads as one content. (Parquet locates its data from the
    # footer, so two concatenated Parquet files are not one file: not tried.)
    content = _content(fmt)
    files = [write(tmp_path / f"plain.{fmt}", content)]
    for kind, (ext, compress) in COMPRESSIONS.items():
        files.append(write(tmp_path / f"one.{fmt}{ext}", compress(content)))
        if fmt != "parquet":
            files.append(write(tmp_path / f"two.{fmt}{ext}", compress(content) + compress(content)))
    manifest = run(_spec(fmt), files, fmt, tmp_path / "out")
    rows = file_rows(manifest)
    twice = 2 * ROWS + (fmt == "csv")  # the second copy's CSV header is a data row there
    assert rows == {f.name: twice if f.name.startswith("two.") else ROWS for f in files}
    assert manifest["features"]["carrier"]["figures"]["rows"] == sum(rows.values())


def _cut_in_half(data: bytes) -> bytes:
    return data[:len(data) // 2]


def _flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 16]) + data[middle + 16:]


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
@pytest.mark.parametrize("kind", COMPRESSIONS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_compressed_file_is_an_error(tmp_path, fmt, kind, damage):
    ext, compress = COMPRESSIONS[kind]
    data = compress(_content(fmt))
    path = write(tmp_path / f"{damage}.{fmt}{ext}", _cut_in_half(data) if damage == "truncated" else _flip_middle(data))
    message = analyze_error(_spec(fmt), [path], fmt, tmp_path / "out")
    assert_error(message, path)
    if damage == "corrupt":  # bzip2 may first see its stream end early
        assert f"corrupt {kind} data" in message or f"truncated {kind} data" in message, message
        return
    assert f"truncated {kind} data: the file ends inside a compressed stream" in message
    # How far it was read: rows where the reader counts them while reading, else bytes.
    assert ("after row " if fmt in ("text", "jsonl", "tfrecord") else "bytes of content") in message


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_compressed_file_missing_its_last_byte_is_an_error(tmp_path, kind):
    # Every row is there; only the end of the stream (checksum, size, end marker) is cut.
    ext, compress = COMPRESSIONS[kind]
    path = write(tmp_path / f"cut.txt{ext}", compress(_content("text"))[:-1])
    message = analyze_error(_spec("text"), [path], "text", tmp_path / "out")
    assert_error(message, path, fragments=[f"truncated {kind} data"])


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_garbage_after_the_last_stream_is_an_error(tmp_path, kind):
    # As in Beam, what follows a stream must be another stream (no silent end).
    ext, compress = COMPRESSIONS[kind]
    path = write(tmp_path / f"tail.txt{ext}", compress(_content("text")) + b"not compressed\n")
    message = analyze_error(_spec("text"), [path], "text", tmp_path / "out")
    assert_error(message, path, fragments=[f"corrupt {kind} data", f"after row {ROWS}"])


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_zero_byte_compressed_file_is_empty(tmp_path, kind):
    # As Python's gzip/bz2/lzma modules and Beam read it: no content, so no rows.
    ext, _ = COMPRESSIONS[kind]
    empty = write(tmp_path / f"empty.txt{ext}", b"")
    good = write(tmp_path / "good.txt", b"a b\n")
    manifest = run(_spec("text"), [empty, good], "text", tmp_path / "out")
    assert file_rows(manifest) == {empty.name: 0, "good.txt": 1}


def test_corrupt_gzip_is_an_error_not_a_zlib_traceback(tmp_path):
    # Before: a raw zlib.error. Header intact, deflate data garbage.
    import gzip
    data = gzip.compress(_content("csv"))
    path = write(tmp_path / "bad.csv.gz", data[:10] + b"\xff" * 40 + data[50:])
    message = analyze_error(_spec("csv"), [path], "csv", tmp_path / "out")
    assert_error(message, path, fragments=["corrupt gzip data"])
