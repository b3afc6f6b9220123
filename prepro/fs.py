"""File access for local paths and remote ones (gs://, s3://, ...).

Remote paths go through Beam's FileSystems when Beam is installed (the analyze job)
and through tf.io.gfile otherwise (a training job), so prepro never needs its own
cloud clients. Local paths use the standard library, which gives atomic renames.

Local writes never follow a planted symlink or reuse a predictable name: a file is
written under an unpredictable temporary name created exclusively (`O_EXCL`,
`O_NOFOLLOW`) in the destination's directory, flushed to disk, then renamed over the
destination, so readers see the old file or the whole new one, never a partial one.
"""

import errno
import os
import secrets
from typing import List

# Temporary files are named `<TEMP_PREFIX><random>` next to their destination; a killed
# job's leftovers are recognised by this prefix (pipelines/publish.py removes them).
TEMP_PREFIX = ".prepro-tmp-"
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def beam_filesystems():
    """Beam's FileSystems (an ImportError where Beam is not installed). Against a Cloud
    Storage emulator (STORAGE_EMULATOR_HOST set), Beam's gs:// client is made anonymous
    first: an emulator needs no credentials, Beam has no option to skip them, and its
    search for them retries for ~20 s in every process that opens a gs:// path (a 0.8 MB
    job took 23.5 s, of which ~20 s were those retries, once in the driver and once per
    worker)."""
    from apache_beam.io.filesystems import FileSystems
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        _anonymous_beam_gcs()
    return FileSystems


def _anonymous_beam_gcs() -> None:
    try:
        from apache_beam.io.gcp import gcsio
    except ImportError:  # Beam without its gcp extra: no gs://
        return
    if getattr(gcsio.create_storage_client, "anonymous", False):
        return

    def anonymous_client(pipeline_options=None, use_credentials=True):
        from google.cloud import storage
        return storage.Client.create_anonymous_client()

    anonymous_client.anonymous = True
    gcsio.create_storage_client = anonymous_client


def is_remote(path: str) -> bool:
    return "://" in path


def join(*parts: str) -> str:
    head = parts[0].rstrip("/")
    return "/".join([head] + [p.strip("/") for p in parts[1:]]) if is_remote(head) else os.path.join(*parts)


def _as_stored():
    """Beam's compression setting for prepro's files: bytes as stored (Beam would
    otherwise (de)compress by file extension)."""
    from apache_beam.io.filesystem import CompressionTypes
    return CompressionTypes.UNCOMPRESSED


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def open_read(path: str):
    """A binary file object reading `path`'s bytes as stored (never decompressed)."""
    if not is_remote(path):
        return open(path, "rb")
    try:
        return beam_filesystems().open(path, compression_type=_as_stored())
    except ImportError:
        import tensorflow as tf
        return tf.io.gfile.GFile(path, "rb")


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file: locally through a temporary file renamed into place,
    remotely as one object (published whole when closed)."""
    with open_write(path) as f:
        f.write(data)


class open_write:
    """A streaming writer: `with fs.open_write(path) as f: f.write(...)`.

    Locally the data goes to an exclusively created temporary file, flushed to disk and
    renamed into place on success, removed on failure; object stores publish the object
    when it is closed. Either way no reader sees a partial file.
    """

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        if is_remote(self.path):
            self._file = _remote_create(self.path)
        else:
            directory = os.path.dirname(self.path) or "."
            os.makedirs(directory, exist_ok=True)
            fd, self._tmp = create_temp(directory)
            self._file = os.fdopen(fd, "wb")
        return self._file

    def __exit__(self, exc_type, exc, tb):
        if is_remote(self.path):
            self._file.close()
            return False
        published = False
        try:
            try:
                if exc_type is None:
                    self._file.flush()
                    os.fsync(self._file.fileno())  # durable before it becomes visible under its name
            finally:
                self._file.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
                published = True
        except OSError as e:
            raise _naming(e, self.path) from None
        finally:
            if not published and os.path.lexists(self._tmp):
                os.remove(self._tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            raise _naming(exc, self.path) from None  # a write inside the block (a full disk...)
        return False


def _naming(error: OSError, path: str) -> OSError:
    """The error with the file it happened to (buffered writes fail without one)."""
    return error if error.filename else OSError(error.errno, error.strerror, path)


def create_temp(directory: str):
    """(fd, path) of a new file with an unpredictable name in `directory`, created
    exclusively: never an existing file, never through a symlink. Unlike
    `tempfile.mkstemp` it keeps the umask's permissions (0600 would make artifacts
    unreadable to the group that trains on them)."""
    for _ in range(100):
        path = os.path.join(directory, TEMP_PREFIX + secrets.token_hex(8))
        try:
            return os.open(path, _CREATE_FLAGS, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", directory)


def _remote_create(path: str):
    try:
        return beam_filesystems().create(path, compression_type=_as_stored())
    except ImportError:
        import tensorflow as tf
        return tf.io.gfile.GFile(path, "wb")


def fsync_directory(path: str) -> None:
    """Makes a rename inside local directory `path` durable (no-op for remote paths)."""
    if is_remote(path):
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    try:
        return beam_filesystems().exists(path)
    except ImportError:
        import tensorflow as tf
        return tf.io.gfile.exists(path)


def delete(paths: List[str]) -> None:
    """Deletes files and directory trees; missing paths are skipped. A local symlink is
    removed itself, never what it points to."""
    import shutil
    for p in paths:
        if not is_remote(p):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            elif os.path.lexists(p):
                os.remove(p)
    remote = [p for p in paths if is_remote(p)]
    if remote:
        FileSystems = beam_filesystems()
        found = list_tree(remote)
        if found:
            FileSystems.delete(found)


def list_tree(paths: List[str]) -> List[str]:
    """Every remote object at or under each of `paths`: an object store has no
    directories, a "directory" is every object under its prefix."""
    FileSystems = beam_filesystems()
    patterns = list(paths) + [p.rstrip("/") + "/**" for p in paths]
    return sorted({m.path for result in FileSystems.match(patterns) for m in result.metadata_list})


def rename_tree(source: str, destination: str) -> None:
    """Moves directory `source` to `destination` (which must not exist): one atomic
    rename locally; object by object on an object store (copies, then deletes)."""
    if not is_remote(source):
        os.rename(source, destination)
        return
    FileSystems = beam_filesystems()
    objects = list_tree([source])
    prefix = source.rstrip("/") + "/"
    FileSystems.rename(objects, [destination.rstrip("/") + "/" + o[len(prefix):] for o in objects])
