"""Special files as inputs: checked before the pipeline runs (pipelines/io.match_inputs),
each an InputError naming the path, so nothing blocks (a FIFO), floods (/dev/zero) or
is created in the output directory.

The rule: a path named without a glob must be a regular file (symlinks followed) that
can be opened; a glob matches as Beam matches, passes over the directories it matches,
and everything else it matches must be such a file.
"""

import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from pipelines.errors import InputError
from pipelines.io import match_inputs
from test_bad_input import analyze_error, assert_error, file_rows, make_spec, run, string_lookup, write

SPEC = make_spec(carrier=string_lookup("carrier"))


@contextlib.contextmanager
def fails_within(seconds):
    """A hang (the bug a FIFO input was) fails the test instead of blocking the suite."""
    def on_alarm(*_):
        raise TimeoutError(f"still blocked after {seconds} s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _good(tmp_path):
    return write(tmp_path / "good.csv", "carrier\nAA\nUA\n")


def _fifo(path):
    os.mkfifo(path)
    return path


def _symlink(path, target):
    os.symlink(target, path)
    return path


@pytest.mark.parametrize("make,what", [
    (lambda d: (d / "dir.csv").mkdir() or d / "dir.csv", "a directory"),
    (lambda d: _fifo(d / "pipe.csv"), "a FIFO"),
    (lambda d: _symlink(d / "broken.csv", d / "nowhere.csv"), "a broken symlink"),
    (lambda d: _symlink(d / "loop.csv", d / "loop.csv"), "a symlink loop"),
    (lambda d: _symlink(d / "zero.csv", "/dev/zero"), "a character device"),
], ids=["directory", "fifo", "broken-symlink", "symlink-loop", "symlink-to-dev-zero"])
def test_special_file_named_as_input(tmp_path, make, what):
    path = make(tmp_path)
    with fails_within(60):
        message = analyze_error(SPEC, [_good(tmp_path), path], "csv", tmp_path / "out")
    assert_error(message, path, fragments=[f"input is {what}", "only regular files are read"])
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_character_device_as_input(tmp_path, device):
    with fails_within(60):
        message = analyze_error(SPEC, [device], "csv", tmp_path / "out")
    assert_error(message, device, fragments=["input is a character device"])


def test_directory_named_as_input_suggests_a_glob(tmp_path):
    (tmp_path / "data").mkdir()
    message = analyze_error(SPEC, [tmp_path / "data"], "csv", tmp_path / "out")
    assert_error(message, tmp_path / "data", fragments=["input is a directory", "glob such as 'dir/*'"])


def test_glob_passes_over_directories_it_matches(tmp_path):
    data = tmp_path / "data"
    (data / "more.csv").mkdir(parents=True)           # a directory the glob matches: not an input
    write(data / "more.csv" / "inner.csv", "carrier\nXX\n")
    write(data / "a.csv", "carrier\nAA\n")
    write(data / "b.csv", "carrier\nUA\nUA\n")
    manifest = run(SPEC, [data / "*.csv"], "csv", tmp_path / "out")
    assert file_rows(manifest) == {"a.csv": 1, "b.csv": 2}
    # '**' reaches into directories (Beam's pattern syntax); a trailing '/' reads a directory's files.
    assert file_rows(run(SPEC, [data / "**"], "csv", tmp_path / "out2")) == {"a.csv": 1, "b.csv": 2, "inner.csv": 1}
    assert file_rows(run(SPEC, [f"{data}/"], "csv", tmp_path / "out3")) == {"a.csv": 1, "b.csv": 2}


@pytest.mark.parametrize("make,what", [
    (lambda d: _fifo(d / "pipe.csv"), "a FIFO"),
    (lambda d: _symlink(d / "broken.csv", d / "nowhere.csv"), "a broken symlink"),
    (lambda d: _symlink(d / "zero.csv", "/dev/zero"), "a character device"),
], ids=["fifo", "broken-symlink", "symlink-to-dev-zero"])
def test_glob_matching_a_special_file_is_an_error(tmp_path, make, what):
    # Beam's own listing drops a broken symlink in silence and lists a FIFO as a file.
    write(tmp_path / "a.csv", "carrier\nAA\n")
    special = make(tmp_path)
    with fails_within(60):
        message = analyze_error(SPEC, [tmp_path / "*.csv"], "csv", tmp_path / "out")
    assert_error(message, special, fragments=[f"input is {what}"])


def test_symlink_to_a_regular_file_is_read(tmp_path):
    target = _good(tmp_path)
    link = _symlink(tmp_path / "link.csv", target)
    assert file_rows(run(SPEC, [link], "csv", tmp_path / "out")) == {"link.csv": 2}


def test_relative_glob_in_the_working_directory(tmp_path, monkeypatch):
    # Beam's listing finds nothing for 'a*.csv' (no directory part); prepro lists '.'.
    write(tmp_path / "a1.csv", "carrier\nAA\n")
    write(tmp_path / "a2.csv", "carrier\nUA\n")
    monkeypatch.chdir(tmp_path)
    assert match_inputs(["a*.csv"]) == [{"path": "a1.csv", "bytes": 11}, {"path": "a2.csv", "bytes": 11}]


def test_unreadable_file(tmp_path):
    path = write(tmp_path / "locked.csv", "carrier\nAA\n")
    os.chmod(path, 0)
    if os.geteuid() != 0:
        message = analyze_error(SPEC, [path], "csv", tmp_path / "out")
        assert_error(message, path, fragments=["cannot be opened", "Permission denied"])
        return
    # Root reads a mode-000 file (the kernel lets it): the job reads it like any other.
    assert file_rows(run(SPEC, [path], "csv", tmp_path / "out")) == {"locked.csv": 1}
    # What another user sees, checked in a child process that drops to 'nobody': a
    # mode-000 file in a directory it can search, and a file in one it cannot.
    shared = tempfile.mkdtemp(prefix="prepro-test-")
    try:
        os.chmod(shared, 0o755)
        locked = write(Path(shared) / "locked.csv", "carrier\nAA\n")
        os.chmod(locked, 0)
        assert _match_as_nobody(locked) == f"file {locked}: input cannot be opened: Permission denied"
        # A directory a '**' glob reaches but cannot list: its files are not left out in silence.
        private = Path(shared) / "private"
        private.mkdir(mode=0o700)
        write(private / "hidden.csv", "carrier\nAA\n")
        os.chmod(locked, 0o644)
        assert _match_as_nobody(f"{shared}/**") == f"file {private}: directory cannot be listed: Permission denied"
        assert "no error" == _match_as_nobody(f"{shared}/*.csv")  # '*' never reaches into it
    finally:
        shutil.rmtree(shared)
    assert _match_as_nobody(path) == f"file {path}: input cannot be read: Permission denied"


def _match_as_nobody(path) -> str:
    """match_inputs([path]) in a forked child running as uid/gid 65534: its InputError."""
    read, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                match_inputs([str(path)])
                result = "no error"
            except InputError as e:
                result = str(e)
            os.write(write_end, result.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read, "rb") as f:
        result = f.read().decode()
    os.waitpid(child, 0)
    return result
