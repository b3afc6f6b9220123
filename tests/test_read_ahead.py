"""pipelines.io.read_ahead: a read task's batches read one ahead in a thread, with the
order of batches, errors and progress calls of read_batches itself."""

import threading

import pytest

from pipelines import io as prepro_io
from pipelines.errors import InputError


def _reader_threads():
    return [t for t in threading.enumerate() if t.name == "prepro-read-ahead"]


def test_same_batches_and_progress_calls_in_the_callers_thread(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_bytes(b"".join(b"line %d with words\r\n" % i for i in range(150000)))
    plain_calls, ahead_calls = [], []
    plain = list(prepro_io.read_batches(str(path), "text", {"text": "string"}, 4096, bytes_read=plain_calls.append))
    caller = threading.current_thread()

    def record(position):
        assert threading.current_thread() is caller
        ahead_calls.append(position)
    ahead = list(prepro_io.read_ahead(lambda bytes_read: prepro_io.read_batches(
        str(path), "text", {"text": "string"}, 4096, bytes_read=bytes_read), record))
    assert len(plain) >= 3
    assert [(b.first_row, b.table) for b in ahead] == [(b.first_row, b.table) for b in plain]
    assert ahead_calls == plain_calls
    assert ahead[0].table.column(0)[0].as_py() == b"line 0 with words"  # "\r\n" ends the line
    assert not _reader_threads()


def test_an_error_comes_after_the_batches_before_it():
    def batches(bytes_read):
        yield "first"
        bytes_read(1)
        raise InputError("broken here", path="f.txt", row=7)
    seen = []
    with pytest.raises(InputError, match="broken here"):
        for batch in prepro_io.read_ahead(batches, seen.append):
            seen.append(batch)
    assert seen == ["first", 1]
    assert not _reader_threads()


def test_a_caller_that_stops_early_stops_the_reader_and_closes_its_file():
    closed = threading.Event()

    def endless(bytes_read):
        try:
            while True:
                yield "batch"
        finally:
            closed.set()
    for i, _ in enumerate(prepro_io.read_ahead(endless)):
        if i == 3:
            break
    assert closed.wait(5)
    assert not _reader_threads()


def test_text_lines_across_batch_boundaries_keep_beams_line_rule(tmp_path):
    """"\n" ends a line, one "\r" before it is dropped (a lone "\r" stays), an unended
    last line is a line (its one "\r" dropped too, as before): the same with every batch
    size, a "\r\n" cut between reads too."""
    body = b"a\r\n\r\nb\rc\n\n" + b"x" * 3000 + b"\r\n" + b"tail\r"
    path = tmp_path / "lines.txt"
    path.write_bytes(body)
    expected = [b"a", b"", b"b\rc", b"", b"x" * 3000, b"tail"]
    for batch_bytes in (1, 7, 4096):
        lines = [v for b in prepro_io.read_batches(str(path), "text", {"text": "string"}, batch_bytes)
                 for v in b.table.column(0).to_pylist()]
        assert lines == expected
