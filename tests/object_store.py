"""A Beam FileSystem with object-store semantics over a local folder, for tests:
`objtest://<local path>`. Like gs:// it has no directories (a "directory" does not
exist, listing is by prefix, deleting a prefix deletes nothing), so prepro's remote
code paths (Beam's FileSystems, pyarrow IPC over Beam's file objects, cleanup) run for
real without a network. Registered by being imported: Beam finds FileSystem subclasses
by scheme."""

import os

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "objtest"
PREFIX = SCHEME + "://"


def local(path: str) -> str:
    return path[len(PREFIX):] if path.startswith(PREFIX) else path


class LocalObjectStore(LocalFileSystem):
    @classmethod
    def scheme(cls):
        return SCHEME

    def has_dirs(self):
        return False

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/")] + [p.strip("/") for p in paths])

    def _url_dirname(self, url_or_path):
        return url_or_path.rsplit("/", 1)[0]

    def _list(self, prefix):
        root = local(prefix)
        folder = root if os.path.isdir(root) else os.path.dirname(root)
        for dirpath, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(dirpath, name)
                if path.startswith(root):
                    yield FileMetadata(PREFIX + path, os.path.getsize(path), os.path.getmtime(path))

    def create(self, path, *args, **kwargs):
        return super().create(local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(local(path), *args, **kwargs)

    def exists(self, path):
        return os.path.isfile(local(path))  # objects only: no directories

    def size(self, path):
        return super().size(local(path))

    def metadata(self, path):
        found = super().metadata(local(path))
        return FileMetadata(path, found.size_in_bytes, found.last_updated_in_seconds)

    def rename(self, source_file_names, destination_file_names):
        # An object store's rename (copy, then delete) needs no parent directory.
        for destination in destination_file_names:
            os.makedirs(os.path.dirname(local(destination)), exist_ok=True)
        super().rename([local(p) for p in source_file_names], [local(p) for p in destination_file_names])

    def delete(self, paths):
        for path in paths:
            if os.path.isfile(local(path)):
                os.remove(local(path))  # an object; a bare prefix names none
