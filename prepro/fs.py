"""File access for local paths and remote ones (gs://, s3://, ...).

Remote paths go through Beam's FileSystems when Beam is installed (the analyze job)
and through tf.io.gfile otherwise (a training job), so prepro never needs its own
cloud clients. Local paths use the standard library, which gives atomic renames.
"""

import os
from typing import List


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
        from apache_beam.io.filesystems import FileSystems
        return FileSystems.open(path, compression_type=_as_stored())
    except ImportError:
        import tensorflow as tf
        return tf.io.gfile.GFile(path, "rb")


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file; locally through a temporary name and an atomic rename."""
    if not is_remote(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    try:
        from apache_beam.io.filesystems import FileSystems
        with FileSystems.create(path, compression_type=_as_stored()) as f:  # published whole at close
            f.write(data)
    except ImportError:
        import tensorflow as tf
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(data)


class open_write:
    """A streaming writer: `with fs.open_write(path) as f: f.write(...)`.

    Locally the data goes to a temporary name renamed into place on success; object
    stores publish the object when it is closed. Either way no reader sees a partial file.
    """

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        if is_remote(self.path):
            from apache_beam.io.filesystems import FileSystems
            self._file = FileSystems.create(self.path, compression_type=_as_stored())
        else:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self._tmp = f"{self.path}.tmp-{os.getpid()}"
            self._file = open(self._tmp, "wb")
        return self._file

    def __exit__(self, exc_type, exc, tb):
        self._file.close()
        if not is_remote(self.path):
            if exc_type is None:
                os.replace(self._tmp, self.path)
            else:
                os.remove(self._tmp)
        return False


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    try:
        from apache_beam.io.filesystems import FileSystems
        return FileSystems.exists(path)
    except ImportError:
        import tensorflow as tf
        return tf.io.gfile.exists(path)


def delete(paths: List[str]) -> None:
    """Deletes files and directory trees; missing paths are skipped."""
    import shutil
    for p in paths:
        if not is_remote(p):
            if os.path.isdir(p):
                shutil.rmtree(p)
            elif os.path.exists(p):
                os.remove(p)
    remote = [p for p in paths if is_remote(p)]
    if remote:
        # An object store has no directories: a "directory" is every object under its prefix.
        from apache_beam.io.filesystems import FileSystems
        patterns = remote + [p.rstrip("/") + "/**" for p in remote]
        found = sorted({m.path for result in FileSystems.match(patterns) for m in result.metadata_list})
        if found:
            FileSystems.delete(found)
